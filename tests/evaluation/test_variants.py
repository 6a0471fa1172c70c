import mujoco
import numpy as np
import pytest

from aloe.envs.base import EnvConfig
from aloe.envs.metaworld import TaskEnv
from aloe.envs.metaworld_variants import (
    BLUE,
    TASK_OBJECTS,
    Variant,
    applied,
    object_body,
    subtree,
    task_variants,
)

TASKS = [*TASK_OBJECTS, "push-v3"]  # the tabled tasks and one that takes the fallback
FIELDS = (
    "geom_size",
    "geom_pos",
    "geom_friction",
    "geom_priority",
    "geom_rgba",
    "geom_matid",
    "body_mass",
    "body_inertia",
    "body_pos",
    "site_pos",
    "geom_type",
)


@pytest.fixture(scope="module", params=TASKS)
def env(request):
    return TaskEnv(EnvConfig(task=request.param, c_fail=100.0))


def _model(env):
    return {f: getattr(env.raw.model, f).copy() for f in FIELDS}


def _geoms(env, root):
    return np.flatnonzero(np.isin(env.raw.model.geom_bodyid, subtree(env.raw.model, root)))


def test_every_task_lists_variants_nominal_first():
    for task in TASKS:
        names = [v.name for v in task_variants(task)]
        assert names[0] == "nominal" and len(set(names)) == len(names)
        assert {"size-0.9", "size-1.1", "mass-x3", "friction-x0.3", "colour-blue"} <= set(names)
        assert "position-out" in names


def test_object_body_is_the_tabled_body_or_the_free_body_nearest_obs(env):
    root = object_body(env)
    model = env.raw.model
    if env.task in TASK_OBJECTS:
        assert (
            mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, root) == TASK_OBJECTS[env.task].body
        )
    else:
        state = env.reset(seed=0)[0]["state"]
        assert np.linalg.norm(env.raw.data.xpos[root] - state[4:7]) < 0.05
    assert any(model.jnt_bodyid[j] == root for j in range(model.njnt))


@pytest.mark.parametrize(
    "variant", [v for v in task_variants("pick-place-v3")[1:-1]], ids=lambda v: v.name
)
def test_variant_changes_the_object_in_the_model_and_is_undone(env, variant):
    before = _model(env)
    with applied(env, variant) as root:
        m, geoms = env.raw.model, _geoms(env, root)
        bodies = subtree(m, root)
        solid = geoms[m.geom_type[geoms] != mujoco.mjtGeom.mjGEOM_MESH]
        if variant.size != 1.0:
            np.testing.assert_allclose(
                m.geom_size[solid], variant.size * before["geom_size"][solid]
            )
        if variant.mass != 1.0:
            np.testing.assert_allclose(
                m.body_mass[bodies], variant.mass * before["body_mass"][bodies]
            )
        if variant.friction != 1.0:
            np.testing.assert_allclose(
                m.geom_friction[geoms, 0], variant.friction * before["geom_friction"][geoms, 0]
            )
            others = np.setdiff1d(np.arange(m.ngeom), geoms)
            assert m.geom_priority[geoms].min() > m.geom_priority[others].max()
        if variant.rgba is not None:
            np.testing.assert_allclose(
                m.geom_rgba[geoms], np.tile(BLUE, (len(geoms), 1)), rtol=1e-6
            )
        changed = [f for f in FIELDS if not np.array_equal(getattr(m, f), before[f])]
        assert changed, "the variant left the model as it was"
        untouched = np.setdiff1d(np.arange(m.ngeom), geoms)
        for f in ("geom_size", "geom_friction", "geom_rgba"):
            np.testing.assert_array_equal(getattr(m, f)[untouched], before[f][untouched])
    after = _model(env)
    for f in FIELDS:
        np.testing.assert_array_equal(after[f], before[f], err_msg=f)


def test_position_variant_starts_the_object_outside_the_training_range(env):
    variant = task_variants(env.task)[-1]
    train = env.raw._random_reset_space
    inside = lambda p: np.all((p >= train.low[:2] - 1e-9) & (p <= train.high[:2] + 1e-9))  # noqa: E731
    with applied(env, variant):
        starts = [(env.reset(seed=s), env.raw.obj_init_pos[:2].copy())[1] for s in range(4)]
    assert not any(inside(p) for p in starts)
    assert env.raw._random_reset_space is train
    env.reset(seed=0)
    assert inside(env.raw.obj_init_pos[:2])


def test_variants_are_isolated_per_evaluation(env):
    def episode():
        obs, _ = env.reset(seed=3)
        states = [obs["state"]]
        for a in np.random.default_rng(0).uniform(-1, 1, (15, 4)):
            states.append(env.step(a)[0]["state"])
        return np.stack(states)

    nominal = episode()
    for variant in task_variants(env.task)[1:]:
        with applied(env, variant):
            episode()
    np.testing.assert_array_equal(episode(), nominal)


def test_size_variant_changes_the_simulated_contact():
    env = TaskEnv(EnvConfig(task="pick-place-v3", c_fail=100.0))

    def settled_height(variant):
        with applied(env, variant):
            env.reset(seed=0)
            for _ in range(20):
                state = env.step(np.zeros(4))[0]["state"]
        return state[6]

    assert settled_height(Variant("big", "", size=1.1)) > settled_height(Variant("n", "")) + 1e-3


def test_expert_success_tells_whether_a_variant_is_solvable():
    from aloe.evaluation.variants import expert_success

    assert expert_success("reach-v3", Variant("nominal", ""), seeds=2) == 1.0


def test_shape_variant_swaps_geom_types_and_is_undone():
    env = TaskEnv(EnvConfig(task="pick-place-v3", c_fail=100.0))
    shape = next(v for v in task_variants("pick-place-v3") if v.name == "shape")
    before = env.raw.model.geom_type.copy()
    with applied(env, shape) as root:
        geoms = _geoms(env, root)
        now = env.raw.model.geom_type[geoms]
        assert (now != before[geoms]).any() and mujoco.mjtGeom.mjGEOM_BOX in now
    np.testing.assert_array_equal(env.raw.model.geom_type, before)
    assert "shape" not in [v.name for v in task_variants("assembly-v3")]

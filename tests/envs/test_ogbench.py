"""The OGBench tasks (aloe.envs.ogbench): Eq. 14 rewards, failure events on constructed
states, exact restore, cameras, the composed operator's success, and a smoke run."""

import json

import numpy as np
import pytest

pytest.importorskip("ogbench", reason="needs the ogbench extra: pip install 'aloe[ogbench]'")

from aloe.envs.metaworld import EnvConfig  # noqa: E402
from aloe.envs.ogbench import OGBenchEnv  # noqa: E402
from aloe.envs.ogbench_tasks import TASKS, OGBenchFailures  # noqa: E402
from aloe.envs.registry import make_env  # noqa: E402
from aloe.envs.tasks import check_task, task_dims  # noqa: E402
from aloe.errors import UsageError  # noqa: E402
from aloe.operators.composed import ComposedOperator, OGBenchHuman  # noqa: E402
from aloe.operators.profiles import make_operator  # noqa: E402
from aloe.operators.scripted import OperatorConfig  # noqa: E402

C_FAIL = 97.0


@pytest.fixture(scope="module")
def cube():
    """One cube-double env for the module (building one costs seconds); its camera renders
    only when an observation's images are read."""
    cfg = EnvConfig(
        task="cube-double", max_steps=400, c_fail=C_FAIL, cameras=("front",), image_size=32
    )
    return make_env(cfg)


def _place(env, cube, xyz):
    """Put cube `cube` at `xyz`, at rest (a constructed state)."""
    joint = env.data.joint(f"object_joint_{cube}")
    joint.qpos[:3], joint.qvel[:] = xyz, 0.0


def _goal(env, cube):
    return env.data.mocap_pos[env.raw._cube_target_mocap_ids[cube]].copy()


def test_the_seam_builds_ogbench_for_its_tasks(cube):
    assert isinstance(cube, OGBenchEnv)
    assert check_task("cube-double") == "cube-double"
    assert task_dims("cube-double") == (TASKS["cube-double"].state_dim, 5)
    obs, info = cube.reset(seed=0)
    assert obs["state"].shape == (cube.state_dim,) and obs["state"].dtype == np.float32
    assert obs["instruction"] == TASKS["cube-double"].instruction
    assert info == {"success": False, "failure_reason": ""}
    with pytest.raises(ValueError, match="share one simulator"):
        check_task("cube-double,reach-v3")


def test_reward_eq14(cube):
    assert cube.reward(success=True, failed=False) == 0.0
    assert cube.reward(success=False, failed=True) == -C_FAIL
    assert cube.reward(success=False, failed=False) == -1.0
    cube.reset(seed=0)
    _, r, term, trunc, info = cube.step(np.zeros(5))
    assert (r, term, trunc, info["failure_reason"]) == (-1.0, False, False, "")


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ((1.2, 0.0, 0.02), "object fell off the table (cube 0)"),
        ((0.75, 0.0, 0.02), "object left the workspace: out of the arm's reach (cube 0)"),
    ],
)
def test_state_checks_fire_on_constructed_states_whoever_acts(cube, where, reason):
    cube.reset(seed=0)
    cube.hand_to("operator")
    _place(cube, 0, where)
    _, r, term, _, info = cube.step(np.zeros(5))
    assert info["failure_reason"] == reason and term and r == -C_FAIL


def test_a_lifted_cube_landing_away_from_its_goal_is_a_drop(cube):
    cube.reset(seed=0)
    hand = cube.data.site_xpos[cube.raw._pinch_site_id].copy()
    away = np.array([0.55 if hand[0] < 0.4 else 0.3, -0.25 if hand[1] > 0 else 0.25, 0.2])
    _place(cube, 0, away)
    reasons = [cube.step(np.zeros(5))[4]["failure_reason"] for _ in range(30)]
    assert "object dropped far from the goal (cube 0)" in reasons


def test_a_completed_stage_undone_by_the_policy_is_a_failure_and_not_under_the_operator(cube):
    for actor, expect in [
        ("policy", "completed stage undone: cube 0 is no longer at its goal"),
        ("operator", ""),
    ]:
        cube.reset(seed=0)
        cube.hand_to(actor)
        _place(cube, 0, _goal(cube, 0))
        assert cube.step(np.zeros(5))[4]["failure_reason"] == ""
        assert cube.stages()[0].met
        _place(cube, 0, _goal(cube, 0) + np.array([0.0, -0.12, 0.0]))
        assert cube.step(np.zeros(5))[4]["failure_reason"] == expect


def test_each_event_has_a_switch(cube):
    reach = "object left the workspace: out of the arm's reach (cube 0)"
    for off, expect in [
        ({"off_table": False}, reach),
        ({"off_table": False, "out_of_reach": False}, ""),
    ]:
        cube.failures = OGBenchFailures(**off)
        cube.reset(seed=0)
        _place(cube, 0, (1.2, 0.0, 0.02))
        assert cube.step(np.zeros(5))[4]["failure_reason"] == expect
    cube.failures = OGBenchFailures()
    with pytest.raises(UsageError, match=r"env.ogbench.lift_height \(0.0\): must be a finite"):
        EnvConfig(task="cube-double", ogbench=OGBenchFailures(lift_height=0.0)).validate()


def _run(env, op, steps):
    obs = env._obs()
    out = []
    for _ in range(steps):
        action = op.act(obs)
        obs, r, term, trunc, info = env.step(action)
        out.append((action, obs["state"], r, term, info["failure_reason"]))
        if term or trunc:
            break
    return out


def test_restore_then_replay_is_identical(cube):
    cube.reset(seed=3)
    op = ComposedOperator("cube-double", OperatorConfig(noise_std=0.1), seed=3)
    _run(cube, op, 25)  # reach and grasp: contacts in the state
    snap = cube.snapshot()
    first = _run(cube, op, 40)
    restored = cube.restore(snap)
    assert np.array_equal(restored["state"], snap["state"].astype(np.float32))
    for action, state, r, term, reason in first:
        obs, r2, term2, _, info = cube.step(action)
        assert np.array_equal(obs["state"], state) and (r2, term2) == (r, term)
        assert info["failure_reason"] == reason


def test_the_same_seed_gives_the_same_episode(cube):
    runs = []
    for _ in range(2):
        cube.reset(seed=7)
        runs.append(_run(cube, ComposedOperator("cube-double", OperatorConfig(), seed=7), 15))
    for a, b in zip(*runs, strict=True):
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_the_human_profile_drives_the_composed_plan(cube):
    op = make_operator("cube-double", OperatorConfig(profile="human"), seed=1)
    assert isinstance(op, OGBenchHuman)
    cube.reset(seed=1)
    actions = [a for a, *_ in _run(cube, op, 60)]
    assert all(a.shape == (5,) and np.all(np.abs(a) <= 1) for a in actions)
    assert np.abs(np.array(actions)[:, :3]).sum() > 0  # the person moves the hand
    assert any(np.abs(np.array(actions)[:, 3]) > 0)  # and turns it, as the plan says


@pytest.mark.render
def test_cameras_render_the_scene(cube):
    obs, _ = cube.reset(seed=0)
    image = obs["images"]["front"]
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8 and image.std() > 0
    with pytest.raises(UsageError, match=r"env.cameras \(\('corner',\)\): must name the task's"):
        EnvConfig(task="cube-double", cameras=("corner",)).validate()


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(TASKS))
def test_the_noise_free_composed_operator_solves_each_task(task):
    env = OGBenchEnv(EnvConfig(task=task, max_steps=TASKS[task].max_steps, c_fail=1.0))
    assert env.state_dim == TASKS[task].state_dim == env.reset(seed=0)[0]["state"].shape[0]
    solved = []
    for seed in range(2):
        env.reset(seed=seed)
        start = env.progress()
        env.hand_to("operator")
        steps = _run(env, ComposedOperator(task, OperatorConfig(noise_std=0.0), seed=seed), 500)
        solved.append(steps[-1][2] == 0.0)  # Eq. 14: the successful end
        assert env.progress() > start + 1.0  # subtasks done count, not stages met
    assert all(solved)


@pytest.mark.slow
def test_aloe_train_cube_double_smoke(tmp_path):
    from aloe.cli import main

    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--task",
                "cube-double",
                "--preset",
                "smoke",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    info = json.loads((out / "dataset" / "meta" / "info.json").read_text())
    assert info["fps"] == 20 and info["features"]["action"]["shape"] == [5]
    saved = json.loads((out / "config.json").read_text())
    assert saved["task"] == "cube-double" and saved["exec_horizon"] == 5
    # the full suite's OPE and action-level OPE restore buffer states by replay, exactly; the
    # MetaWorld-only parts say they did not run
    assert (
        main(
            [
                "eval",
                "--run",
                str(out),
                "--suite",
                "full",
                "--episodes",
                "2",
                "--ope-pairs",
                "3",
                "--ope-rollouts",
                "1",
                "--action-ope-states",
                "3",
                "--action-ope-chunks",
                "2",
                "--action-ope-rollouts",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    ev = json.loads((out / "eval.json").read_text())
    assert ev["ope"]["restore_exact"] == 1.0 and ev["ope"]["pairs"] == 3
    assert ev["action_ope"]["restore_exact"] == 1.0 and ev["action_ope"]["states"] == 3
    assert set(ev["not_run"]) == {"variants", "perturbations", "q_traces"}
    assert (
        ev["variants"] == {} and ev["perturbations"] == {} and "policy" in ev["weights_by_source"]
    )


def test_collect_with_a_random_policy_uses_the_tasks_action_size(tmp_path):
    """`aloe collect --policy random` on OGBench: random chunks of its 5 actions, the
    composed operator taking over (MetaWorld's are 4 wide)."""
    from aloe.cli import main

    out = tmp_path / "store"
    assert (
        main(
            [
                "collect",
                "--task",
                "cube-double",
                "--policy",
                "random",
                "--episodes",
                "1",
                "--max-steps",
                "30",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["features"]["action"]["shape"] == [5] and info["total_episodes"] == 1


def test_an_image_run_on_ogbench_starts_from_its_own_camera():
    """`--obs image` on an OGBench task: the presets name its scene's camera, and its
    cameras are what `--vision.cameras` may name."""
    from aloe.config import preset

    cfg = preset("default", "cube-double")
    cfg.obs = "image"
    assert cfg.vision.cameras == ("front",)
    cfg.validate()
    assert cfg.resolved().env.cameras == ("front",)
    assert preset("default").vision.cameras == ("corner",)

import numpy as np
import pytest

from aloe.envs.metaworld import EnvConfig, TaskEnv
from aloe.envs.metaworld_variants import object_body
from aloe.evaluation.perturb import Perturbation, Perturber, Schedule, default_perturbations
from aloe.evaluation.rollout import rollout
from aloe.policies.chunk_policy import RandomPolicy

START = 12


@pytest.fixture(scope="module")
def env():
    return TaskEnv(EnvConfig(task="pick-place-v3", c_fail=100.0, max_steps=40))


def _states(env, perturbation=None, seed=5):
    hook = Perturber(env, perturbation, seed) if perturbation else None
    traj = rollout(env, RandomPolicy(seed=1), seed, hook=hook)
    if hook:
        hook.finish(env)
    return np.stack(traj.states)


def test_schedule_bursts():
    s = Schedule(start=10, every=20, duration=3)
    active = [t for t in range(60) if s.burst(t) is not None]
    assert active == [10, 11, 12, 30, 31, 32, 50, 51, 52]
    assert [s.burst(t) for t in (10, 31, 52)] == [0, 1, 2]
    once = Schedule(start=5, every=0, duration=2)
    assert [t for t in range(100) if once.burst(t) is not None] == [5, 6]


@pytest.mark.parametrize("kind,strength", [("action_noise", 0.5), ("push", 20.0), ("kick", 0.5)])
def test_perturbation_changes_the_trajectory_only_after_it_starts(env, kind, strength):
    p = Perturbation(kind, kind, strength, Schedule(start=START, every=0, duration=3))
    plain, perturbed = _states(env), _states(env, p)
    # s_0..s_START are the states before the first perturbed step: identical
    np.testing.assert_array_equal(perturbed[: START + 1], plain[: START + 1])
    n = min(len(plain), len(perturbed))
    assert not np.array_equal(perturbed[START + 1 : n], plain[START + 1 : n])
    if kind != "action_noise":  # the object itself was moved
        obj = slice(4, 7)
        assert np.abs(perturbed[START + 4, obj] - plain[START + 4, obj]).max() > 1e-3


def test_push_is_removed_after_the_burst_and_at_the_end(env):
    p = Perturbation("push", "push", 20.0, Schedule(start=2, every=0, duration=3))
    body = object_body(env)
    hook = Perturber(env, p, 0)
    env.reset(seed=0)
    for t in range(6):
        hook.before_step(env, t, np.zeros(4))
        active = np.abs(env.raw.data.xfrc_applied[body]).sum() > 0
        assert active == (2 <= t < 5)
        env.step(np.zeros(4))
        hook.after_step(env, t)
    assert not env.raw.data.xfrc_applied.any()
    hook.before_step(env, 2, np.zeros(4))
    hook.finish(env)
    assert not env.raw.data.xfrc_applied.any()


def test_perturbed_episodes_are_reproducible(env):
    for p in default_perturbations():
        np.testing.assert_array_equal(_states(env, p), _states(env, p))

import numpy as np
import pytest

from aloe.envs.base import EnvConfig
from aloe.envs.failures import FailureConfig, FailureDetector
from aloe.envs.metaworld import TaskEnv
from aloe.envs.registry import backend_of
from aloe.envs.tasks import INSTRUCTIONS, check_task, supported_tasks
from aloe.operators.scripted import expert_policy


def test_reward_eq14(peg_env):
    assert peg_env.reward(success=True, failed=False) == 0.0
    assert peg_env.reward(success=False, failed=True) == -100.0
    assert peg_env.reward(success=False, failed=False) == -1.0


def test_expert_episode_ends_in_success_with_eq14_rewards(peg_env):
    expert = expert_policy("peg-insert-side-v3")
    obs, _ = peg_env.reset(seed=1)
    assert obs["state"].shape == (39,) and obs["instruction"] == INSTRUCTIONS["peg-insert-side-v3"]
    rewards, term = [], False
    while not term:
        obs, r, term, trunc, info = peg_env.step(expert.get_action(obs["state"]))
        rewards.append(r)
        assert not trunc
    assert info["success"] and info["failure_reason"] == ""
    assert rewards[-1] == 0.0 and set(rewards[:-1]) == {-1.0}


def test_timeout_is_a_failure_by_default_and_a_truncation_when_asked():
    for timeout_is_failure, expect in [(True, (True, False, -7.0)), (False, (False, True, -1.0))]:
        env = TaskEnv(
            EnvConfig(
                task="reach-v3", max_steps=5, c_fail=7.0, timeout_is_failure=timeout_is_failure
            )
        )
        env.reset(seed=0)
        for _ in range(5):
            _, r, term, trunc, info = env.step(np.zeros(4))
        assert (term, trunc, r) == expect
        assert info["failure_reason"] == ("timeout" if timeout_is_failure else "")


def test_seeded_resets_are_reproducible_and_seeds_differ(peg_env):
    a = peg_env.reset(seed=5)[0]["state"]
    b = peg_env.reset(seed=5)[0]["state"]
    c = peg_env.reset(seed=6)[0]["state"]
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_restore_then_replay_gives_identical_observations(peg_env):
    rng = np.random.default_rng(0)
    expert = expert_policy("peg-insert-side-v3")
    obs, _ = peg_env.reset(seed=3)
    for _ in range(25):
        obs, *_ = peg_env.step(expert.get_action(obs["state"]))
    snap = peg_env.snapshot()
    actions = rng.uniform(-1, 1, (30, 4))
    first = [peg_env.step(a)[0]["state"] for a in actions]
    restored = peg_env.restore(snap)
    assert np.array_equal(restored["state"], snap["state"].astype(np.float32))
    second = [peg_env.step(a)[0]["state"] for a in actions]
    assert all(np.array_equal(x, y) for x, y in zip(first, second, strict=True))


def _state(obj=(0.0, 0.6, 0.02), goal=(0.3, 0.8, 0.1), hand=(0.0, 0.6, 0.2)):
    s = np.zeros(39)
    s[0:3], s[4:7], s[36:39] = hand, obj, goal
    return s


def test_failure_detectors():
    det = FailureDetector(FailureConfig(stall_steps=3))
    det.reset(_state())
    assert det(_state(obj=(0.0, 0.6, -0.2)), 1.0) == "object fell off the table"
    det.reset(_state())
    assert det(_state(obj=(0.9, 0.6, 0.02)), 1.0) == "object left the workspace"
    det.reset(_state())
    assert det(_state(obj=(0.0, 0.6, 0.2), hand=(0.0, 0.6, 0.2)), 1.0) is None  # lifted
    assert det(_state(obj=(0.0, 0.6, 0.02)), 2.0) == "object dropped far from the goal"
    det.reset(_state())
    reasons = [det(_state(), 1.0) for _ in range(4)]
    assert reasons[:3] == [None, None, None] and reasons[3].startswith("stall")


def test_task_registry():
    tasks = supported_tasks()
    for name in ["pick-place-v3", "peg-insert-side-v3", "assembly-v3", "bin-picking-v3"]:
        assert name in tasks
    assert len([t for t in tasks if backend_of(t).name == "metaworld"]) == 50
    with pytest.raises(ValueError, match="unknown task 'peg-insert'"):
        check_task("peg-insert")

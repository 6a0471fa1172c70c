"""The rollout engine (aloe.rollout): takeover cut, hooks, and the recorder's columns."""

import numpy as np
import pytest

from aloe import data as D
from aloe.envs.metaworld import EnvConfig, TaskEnv
from aloe.operators.scripted import OperatorConfig, ScriptedOperator
from aloe.policies.chunk_policy import RandomPolicy
from aloe.rollout import EpisodeRecorder, Takeover, play_episode, record_episode

C_FAIL = 50.0


class LineEnv:
    """A point on a line, goal at x = 10: the action's first entry moves it (clipped to ±1).
    Fails when x < -5; `progress` is x."""

    task, instruction = "line", "reach ten"

    def __init__(self, max_steps: int = 30) -> None:
        self.max_steps, self.x, self.steps, self.limit = max_steps, 0.0, 0, max_steps
        self.executed: list[float] = []
        self.progress_resets = 0
        self.actors: list[str] = []

    def obs(self) -> dict:
        return {"state": np.array([self.x], dtype=np.float32), "instruction": self.instruction}

    def reset(self, *, seed: int) -> tuple[dict, dict]:
        self.x, self.steps, self.limit = float(seed), 0, self.max_steps
        return self.obs(), {"success": False, "failure_reason": ""}

    def step(self, action):
        self.executed.append(float(action[0]))
        self.x += float(np.clip(action[0], -1.0, 1.0))
        self.steps += 1
        success = self.x >= 10.0
        reason = "" if success else ("fell" if self.x < -5.0 else "")
        if not success and not reason and self.steps >= self.limit:
            reason = "timeout"
        info = {"success": success, "failure_reason": reason, "progress": self.x}
        obs = self.obs()
        return (
            obs,
            self.reward(success=success, failed=bool(reason)),
            success or bool(reason),
            False,
            info,
        )

    def reward(self, *, success: bool, failed: bool) -> float:
        return 0.0 if success else (-C_FAIL if failed else -1.0)

    def reset_progress(self) -> None:
        self.progress_resets += 1

    def hand_to(self, actor: str) -> None:
        self.actors.append(actor)

    def snapshot(self) -> dict:
        return {"x": self.x, "steps": self.steps}

    def restore(self, snap: dict) -> dict:
        self.x, self.steps = snap["x"], snap["steps"]
        return self.obs()

    def sim_state(self) -> np.ndarray:
        return np.array([self.x, self.steps], dtype=np.float64)


class Stuck:
    """A policy that stands still (chunks of 4, 3 executed)."""

    version, exec_horizon = 7, 3

    def __init__(self) -> None:
        self.chunks = 0

    def reset(self, seed: int) -> None:
        self.chunks = 0

    def act_chunk(self, obs: dict) -> np.ndarray:
        self.chunks += 1
        return np.zeros((4, 1), dtype=np.float32)


class Helper:
    """Raises an alarm after `after` watched steps; rewinds 2 steps; then walks to the goal."""

    def __init__(self, after: int) -> None:
        self.after, self.seen, self.took = after, 0, []

    def reset(self, seed: int) -> None:
        self.seen = 0

    def start_watching(self) -> None:
        self.seen = 0

    def watch(self, obs, info):
        self.seen += 1
        return "bored" if self.seen >= self.after else None

    def take_over(self, reason, history):
        self.took.append((reason, len(history)))
        return len(history) - 3

    def act(self, obs):
        return np.ones(1, dtype=np.float32)


def test_the_watchers_alarm_cuts_the_fragment_and_the_operator_completes():
    env, op, rec = LineEnv(), Helper(after=5), EpisodeRecorder()
    counts = play_episode(env, 2, policy=Stuck(), operator=op, recorder=rec)
    ep = rec.episode(env, {})
    src, frag = ep.steps[D.SOURCE], ep.steps[D.FRAGMENT]
    # five policy steps, then the operator from the snapshot two steps before the cut (x = 2)
    assert list(src) == ["policy"] * 5 + ["human"] * 8 and list(frag) == [0] * 5 + [1] * 8
    assert op.took == [("takeover: bored", 5)] and env.progress_resets == 1
    assert env.actors == ["policy", "operator"]  # who acts, told to the env as control changes
    assert ep.steps[D.DONE][4] and ep.steps[D.REWARD][4] == -C_FAIL
    assert ep.steps[D.FAILURE_REASON][4] == "takeover: bored"
    assert ep.steps[D.INTERVENTION].tolist() == [False] * 5 + [True] * 8
    assert ep.steps[D.POLICY_VERSION].tolist() == [7] * 5 + [-1] * 8
    assert ep.success and ep.steps[D.SIM_STATE][5].tolist() == [2.0, 3.0]
    assert (counts.steps, counts.policy_steps, counts.operator_steps) == (13, 5, 8)
    assert counts.takeovers == 1 and counts.success and counts.failure_reason == "takeover: bored"


def test_handback_returns_control_and_the_last_takeover_completes():
    env, op = LineEnv(max_steps=100), Helper(after=4)
    rule = Takeover(handback_steps=2, operator_max_steps=50, max_takeovers=2)
    rec = EpisodeRecorder(record_sim_state=False)
    counts = play_episode(env, 0, policy=Stuck(), operator=op, recorder=rec, takeover=rule)
    cols = rec.cols
    # policy 4, human 2 (handed back: truncated, no outcome), policy 4, human to the goal
    assert cols[D.FRAGMENT] == [0] * 4 + [1] * 2 + [2] * 4 + [3] * 8
    assert cols[D.TRUNCATED][5] and not cols[D.DONE][5] and cols[D.REWARD][5] == -1.0
    assert counts.takeovers == 2 and counts.success and D.SIM_STATE not in cols


def test_alone_the_policy_runs_in_chunks_until_the_time_limit():
    env, policy = LineEnv(max_steps=10), Stuck()
    counts = play_episode(env, 0, policy=policy)
    assert policy.chunks == 4 and counts.steps == 10 and not counts.success
    assert counts.failure_reason == "timeout" and counts.takeovers == 0


class Hook:
    def __init__(self) -> None:
        self.calls = []

    def before_step(self, env, t, action):
        self.calls.append(("before", t))
        return action - 0.5

    def after_step(self, env, t):
        self.calls.append(("after", t))


def test_hooks_wrap_every_step_and_their_action_is_the_one_executed():
    env, hook, rec = LineEnv(max_steps=4), Hook(), EpisodeRecorder(record_sim_state=False)
    play_episode(env, 0, policy=Stuck(), hook=hook, recorder=rec)
    assert hook.calls == [(w, t) for t in range(4) for w in ("before", "after")]
    assert (
        env.executed == [-0.5] * 4 and np.stack(rec.cols[D.ACTION]).ravel().tolist() == [-0.5] * 4
    )


def test_a_demonstration_is_the_operator_alone():
    env = LineEnv(max_steps=30)
    done = record_episode(env, 3, policy=None, operator=Helper(after=99))
    assert set(done.episode.steps[D.SOURCE]) == {"demo"} and len(done.episode) == 7
    assert done.counts.operator_steps == 7 and done.episode.meta["takeovers"] == 0


# What `collect.run_episode` stored for these episodes before the engine existed.
PINNED = {
    # handback, seed: length, fragment ends, done rows, truncated rows, Σ reward, Σ state, Σ action
    (0, 1): (121, [20, 120], [20, 120], [], -219.0, 895.888983, 2.910332),
    (10, 1): (
        143,
        [20, 30, 51, 61, 82, 142],
        [20, 51, 82, 142],
        [30, 61],
        -339.0,
        1125.533869,
        -88.835854,
    ),
}


@pytest.mark.parametrize("handback,seed", list(PINNED))
def test_recorded_columns_match_what_collection_stored_before(handback, seed):
    env = TaskEnv(EnvConfig(task="bin-picking-v3", c_fail=C_FAIL, max_steps=80))
    op = ScriptedOperator(env.task, OperatorConfig(patience=20))
    rule = Takeover(handback, 100 if not handback else 60, 3)
    done = record_episode(
        env,
        seed,
        policy=RandomPolicy(seed=seed),
        operator=op,
        takeover=rule,
        record_sim_state=not handback,
    )
    s = done.episode.steps
    n, ends, dones, truncs, reward, state, action = PINNED[handback, seed]
    assert len(done.episode) == n == done.counts.steps
    assert np.flatnonzero(np.r_[s[D.FRAGMENT][1:] != s[D.FRAGMENT][:-1], True]).tolist() == ends
    assert np.flatnonzero(s[D.DONE]).tolist() == dones
    assert np.flatnonzero(s[D.TRUNCATED]).tolist() == truncs
    assert float(s[D.REWARD].sum()) == reward
    assert float(s[D.STATE].astype(np.float64).sum()) == pytest.approx(state, rel=1e-6)
    assert float(s[D.ACTION].astype(np.float64).sum()) == pytest.approx(action, rel=1e-6)
    assert done.counts.takeovers == done.episode.meta["takeovers"] == len(ends) // 2
    assert (D.SIM_STATE in s) == (not handback)

"""The ground-truth estimator and the exact restore, on cases whose answer is known exactly."""

import numpy as np
import pytest
from known_replays import CFG, GAMMA, QUICK, TASK, Expert, H
from known_replays import frames_of as known_frames

from aloe import data as D
from aloe.envs.metaworld import TaskEnv
from aloe.evaluation.ope import accuracy, ground_truth, sample_pairs, spearman
from aloe.evaluation.rollout import SerialPolicy
from aloe.operators.scripted import ScriptedOperator
from aloe.policies.chunk_policy import RandomPolicy


def test_restore_reproduces_the_stored_observations_exactly(recorded):
    frames, restorer = recorded
    env, other = TaskEnv(CFG), TaskEnv(CFG)
    source = frames[D.SOURCE]
    human = np.flatnonzero((frames["episode_index"] == 1) & (source == "human"))
    rows = [
        0,
        7,
        30,
        int(np.flatnonzero(frames["episode_index"] == 1)[5]),
        int(human[0]),
        int(human[10]),
    ]
    for row in rows:
        restored = restorer.restore(env, row)
        assert restored.exact, row
        np.testing.assert_array_equal(restored.obs, frames[D.STATE][row])
        np.testing.assert_array_equal(restorer.copy_to(env, other, row), restored.obs)
        for k in range(row, row + 5):  # stepping on reproduces the stored next observations
            np.testing.assert_array_equal(
                other.step(frames[D.ACTION][k])[0]["state"], frames[D.NEXT_STATE][k]
            )


def test_ground_truth_equals_the_known_return_of_a_deterministic_policy(recorded):
    frames, restorer = recorded
    demo_rows = np.flatnonzero(frames["episode_index"] == 0)
    pairs = sample_pairs(frames, restorer, 10_000, H, GAMMA, seed=0)
    keep = np.isin(pairs.rows, demo_rows[[0, 5, 20, len(demo_rows) - 4]])
    for name in ("rows", "states", "chunks", "valid", "behaviour_return", "source"):
        setattr(pairs, name, getattr(pairs, name)[keep])
    # Executing the demo's own chunk and then the same noise-free expert replays the demo,
    # whose discounted return to its successful end is known exactly.
    truth = ground_truth(lambda: TaskEnv(CFG), restorer, pairs, Expert(), gamma=GAMMA, rollouts=2)
    assert truth.exact.all()
    np.testing.assert_allclose(truth.q, np.repeat(pairs.behaviour_return[:, None], 2, 1), rtol=1e-5)
    np.testing.assert_allclose(truth.v, truth.q, rtol=1e-5)
    assert pairs.valid[-1].sum() == 4 and truth.q[-1, 0] == pytest.approx(-(1 + GAMMA + GAMMA**2))


def test_chunk_ending_in_a_labelled_takeover_failure_has_the_exact_failure_return(recorded):
    frames, restorer = recorded
    ep = frames["episode_index"] == 1
    end = int(np.flatnonzero(ep & frames[D.DONE] & (frames[D.SOURCE] == "policy"))[0])
    assert frames[D.FAILURE_REASON][end].startswith("takeover")
    pairs = sample_pairs(frames, restorer, 10_000, H, GAMMA, seed=0)
    keep = pairs.rows == end - 3
    for name in ("rows", "states", "chunks", "valid", "behaviour_return", "source"):
        setattr(pairs, name, getattr(pairs, name)[keep])
    # Whatever the policy would do afterwards (random chunks here), the chunk's fourth step is
    # where the operator's alarm fired in collection: its watch counters were restored.
    random = SerialPolicy(RandomPolicy(seed=0))
    truth = ground_truth(
        lambda: TaskEnv(CFG),
        restorer,
        pairs,
        random,
        gamma=GAMMA,
        rollouts=2,
        make_watcher=lambda: ScriptedOperator(TASK, QUICK),
    )
    expected = -1 - GAMMA - GAMMA**2 - GAMMA**3 * CFG.c_fail
    assert pairs.valid[0].sum() == 4
    np.testing.assert_allclose(truth.q[0], [expected, expected], rtol=1e-6)
    watcher = ScriptedOperator(TASK, QUICK)
    restorer.restore(TaskEnv(CFG), end - 3, watcher)
    assert watcher.stall.idle == QUICK.patience - 4  # four more idle steps to the alarm
    assert pairs.behaviour_return[0] == pytest.approx(expected)
    assert truth.exact.all()


def test_rank_correlation_and_error_measures():
    assert spearman(np.array([1.0, 2, 3]), np.array([10.0, 20, 30])) == pytest.approx(1.0)
    assert spearman(np.array([1.0, 2, 3]), np.array([3.0, 2, 1])) == pytest.approx(-1.0)
    assert np.isnan(spearman(np.array([1.0, 1, 1]), np.array([1.0, 2, 3])))
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 5, 40).astype(float), rng.normal(size=40)  # with ties
    assert spearman(x, y) == pytest.approx(scipy_stats.spearmanr(x, y).statistic)
    acc = accuracy(np.array([1.0, 3.0]), np.array([0.0, 1.0]))
    assert acc["bias"] == pytest.approx(1.5) and acc["rmse"] == pytest.approx(np.sqrt(2.5))
    assert acc["n"] == 2


class _Rewinding:
    """An operator that rewinds 5 steps at every takeover (the composed operator rewinds only
    after an irrecoverable failure): the replay must find the earlier state."""

    def __init__(self, operator):
        self.operator = operator

    def __getattr__(self, name):
        return getattr(self.operator, name)

    def take_over(self, reason, history):
        return max(0, len(history) - 6)


@pytest.mark.slow
def test_ogbench_steps_restore_by_replay_across_takeovers_and_rewinds():
    """scene keeps its buttons and locks outside the MuJoCo state: its stored steps restore
    by replaying the episode, exactly, also after a takeover rewound the world and at a
    policy fragment after a handback."""
    from aloe.collect import run_episode
    from aloe.envs.metaworld import EnvConfig
    from aloe.envs.registry import make_env
    from aloe.evaluation.restore import ReplayRestorer, make_restorer
    from aloe.operators.composed import ComposedOperator
    from aloe.operators.scripted import OperatorConfig

    cfg = EnvConfig(task="scene", max_steps=300, c_fail=165.0)
    env, other = make_env(cfg), make_env(cfg)
    quick = OperatorConfig(noise_std=0.0, patience=8)
    demo = run_episode(env, ComposedOperator("scene", quick), 1, policy=None)
    op = _Rewinding(ComposedOperator("scene", quick, seed=2))
    taken = run_episode(
        env, op, 5, policy=RandomPolicy(action_dim=5, seed=2), handback_steps=20, max_takeovers=2
    )
    assert demo.success and taken.meta["takeovers"] == 2
    frames = known_frames([demo, taken])
    restorer = make_restorer("scene", frames, {0: 1, 1: 5}, cfg.max_steps)
    assert isinstance(restorer, ReplayRestorer)
    ep, source = frames["episode_index"], frames[D.SOURCE]
    starts = np.flatnonzero((ep == 1) & D.run_starts(frames[D.FRAGMENT]))
    human = [int(k) for k in starts if source[k] == "human"]
    # the takeover rewound: the operator's first state is not where the policy's last step led
    assert not np.array_equal(frames[D.STATE][human[0]], frames[D.NEXT_STATE][human[0] - 1])
    env.reset(seed=1)
    initial = env.raw._cur_button_states.copy()
    for k in range(len(demo)):  # the first step after the demo's first press: unlocked
        env.step(frames[D.ACTION][k])
        if not np.array_equal(env.raw._cur_button_states, initial):
            break
    pressed, buttons = k + 1, env.raw._cur_button_states.copy()  # the state row k + 1 began in
    handback = [int(k) for k in starts if source[k] == "policy" and k > human[0]]
    rows = [3, pressed, len(demo) - 10, human[0], human[0] + 4, handback[0], handback[0] + 2]
    for row in rows:
        restored = restorer.restore(env, row)
        assert restored.exact, row
        np.testing.assert_array_equal(restored.obs, frames[D.STATE][row])
        np.testing.assert_array_equal(restorer.copy_to(env, other, row), restored.obs)
        if row == pressed:  # the lock's state, which the MuJoCo state alone does not hold
            np.testing.assert_array_equal(other.raw._cur_button_states, buttons)
        for k in range(row, min(row + 5, len(frames[D.ACTION]))):
            if frames[D.EPISODE][k] != frames[D.EPISODE][row] or (
                k > row and D.run_starts(frames[D.FRAGMENT][k - 1 : k + 1])[1]
            ):
                break
            np.testing.assert_array_equal(
                other.step(frames[D.ACTION][k])[0]["state"], frames[D.NEXT_STATE][k]
            )

import numpy as np

from aloe.envs.metaworld import EnvConfig, TaskEnv
from aloe.evaluation.qtrace import (
    EpisodeTrace,
    chunk_windows,
    from_trajectory,
    plot_q_trace,
    q_trace,
)
from aloe.evaluation.rollout import rollout
from aloe.policies.chunk_policy import RandomPolicy


def test_chunk_windows_take_executed_actions_and_stop_at_fragment_ends():
    actions = np.arange(6, dtype=np.float32)[:, None]
    fragment = np.array([0, 0, 0, 1, 1, 1])
    chunks, valid = chunk_windows(actions, fragment, 4)
    assert chunks.shape == (6, 4, 1) and valid.shape == (6, 4)
    np.testing.assert_array_equal(valid[0], [1, 1, 1, 0])
    np.testing.assert_array_equal(chunks[0, :, 0], [0, 1, 2, 0])
    np.testing.assert_array_equal(valid[2], [1, 0, 0, 0])  # never crosses into fragment 1
    np.testing.assert_array_equal(chunks[3, :, 0], [3, 4, 5, 0])
    np.testing.assert_array_equal(valid[5], [1, 0, 0, 0])


def test_q_trace_feeds_each_step_its_chunk_and_the_plot_is_written(tmp_path):
    t = 12
    trace = EpisodeTrace(
        states=np.random.default_rng(0).normal(size=(t, 39)).astype(np.float32),
        actions=np.zeros((t, 4), np.float32),
        source=np.array(["policy"] * 5 + ["human"] * 7),
        fragment=np.array([0] * 5 + [1] * 7),
        failure_reason=np.array([""] * 4 + ["takeover: stuck"] + [""] * 7),
        success=True,
        title="constructed",
    )
    seen = {}

    def q_fn(states, chunks, valid):
        seen["valid"] = valid
        return np.stack([valid.sum(1), valid.sum(1) + 1.0])  # (K=2, T)

    q = q_trace(q_fn, trace, horizon=3)
    assert q.shape == (2, t)
    np.testing.assert_array_equal(q[0], [3, 3, 3, 2, 1, 3, 3, 3, 3, 3, 2, 1])
    path = plot_q_trace(trace, q, tmp_path / "sub" / "q.png", 80.0)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a name without a suffix: the returned path (what plot-q prints) is the file written
    bare = plot_q_trace(trace, q, tmp_path / "afile", 80.0)
    assert bare == tmp_path / "afile.png" and bare.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile.png", "sub"]


def test_trace_of_a_rollout():
    env = TaskEnv(EnvConfig(task="reach-v3", c_fail=10.0, max_steps=15))
    traj = rollout(env, RandomPolicy(seed=0), 3)
    trace = from_trajectory(traj, "rollout")
    assert trace.states.shape == (15, 39) and set(trace.source) == {"policy"}
    assert trace.failure_reason[-1] == "timeout" and not trace.success

"""The episode clock of `critic.time_features`: the same values from stored columns
(training, evaluation) as kept live step by step (collection, serving, a robot)."""

from __future__ import annotations

import numpy as np
import pytest

from aloe import data as D
from aloe.datasets.sampler import ChunkSampler
from aloe.rollout import EpisodeRecorder, Step, Takeover, play_episode
from tests.scripts import ROOT, load_script


def engine() -> object:
    """tests/test_rollout_engine.py's line world, stuck policy and helper operator."""
    return load_script(ROOT / "tests" / "test_rollout_engine.py")


def test_episode_clock_by_hand() -> None:
    """Two episodes: policy ×3, human ×2, policy ×2 | demo ×2; limit 10."""
    frames = {
        D.EPISODE: np.array([0] * 7 + [1] * 2),
        D.FRAGMENT: np.array([0, 0, 0, 1, 1, 2, 2, 0, 0]),
        D.SOURCE: np.array(["policy"] * 3 + ["human"] * 2 + ["policy"] * 2 + ["demo"] * 2),
    }
    clock = D.episode_clock(frames, limit=10) * 10
    assert clock[:, 0].tolist() == [0, 1, 2, 3, 3, 3, 4, 0, 0]  # policy steps before the row
    assert clock[:, 1].tolist() == [0, 1, 2, 0, 1, 0, 1, 0, 1]  # steps since the fragment began


class ClockedRecorder(EpisodeRecorder):
    """Collection's recorder, with the live clock read at every step as it is taken."""

    def __init__(self, limit: int) -> None:
        super().__init__(record_sim_state=False)
        self.clock = D.EpisodeClock(limit)
        self.live: list[np.ndarray] = []

    def add(self, step: Step) -> None:
        self.live.append(self.clock.tick(step.source, step.fragment))
        super().add(step)


def test_the_clock_is_the_same_live_and_from_the_store() -> None:
    """Episodes with takeovers and handbacks, as collection records them: the clock kept
    during collection equals the one computed from the stored columns."""
    m = engine()
    rule = Takeover(handback_steps=2, operator_max_steps=50, max_takeovers=3)
    episodes, live = [], []
    for seed in (0, 3):
        env, rec = m.LineEnv(max_steps=100), ClockedRecorder(limit=40)  # type: ignore[attr-defined]
        play_episode(
            env, seed, policy=m.Stuck(), operator=m.Helper(after=4), recorder=rec, takeover=rule
        )  # type: ignore[attr-defined]
        episodes.append(rec.episode(env, {}))
        live.append(np.stack(rec.live))
    frames = {
        name: np.concatenate([e.steps[name] for e in episodes]) for name in (D.SOURCE, D.FRAGMENT)
    }
    frames[D.EPISODE] = np.concatenate([np.full(len(e), i) for i, e in enumerate(episodes)])
    assert len(set(frames[D.FRAGMENT].tolist())) >= 4  # several policy and human fragments
    np.testing.assert_array_equal(D.episode_clock(frames, limit=40), np.concatenate(live))


def test_the_sampler_gives_the_clock_at_both_ends_of_a_chunk() -> None:
    """s_{t+n}'s clock is n steps on in the same fragment (policy steps only if the chunk
    is the policy's); without a time limit batches carry none."""
    n_rows = 6
    frames = {
        D.STATE: np.zeros((n_rows, 1), np.float32),
        D.NEXT_STATE: np.zeros((n_rows, 1), np.float32),
        D.ACTION: np.zeros((n_rows, 1), np.float32),
        D.REWARD: -np.ones(n_rows, np.float32),
        D.DONE: np.array([0, 0, 1, 0, 0, 1], bool),
        D.TRUNCATED: np.zeros(n_rows, bool),
        D.SUCCESS: np.zeros(n_rows, bool),
        D.INTERVENTION: np.array([0, 0, 0, 1, 1, 1], bool),
        D.SOURCE: np.array(["policy"] * 3 + ["human"] * 3, object),
        D.POLICY_VERSION: np.zeros(n_rows, np.int32),
        D.FRAGMENT: np.array([0, 0, 0, 1, 1, 1], np.int32),
        D.FAILURE_REASON: np.array([""] * n_rows, object),
        D.EPISODE: np.zeros(n_rows, np.int64),
        D.FRAME: np.arange(n_rows),
        D.INDEX: np.arange(n_rows),
        D.TASK: np.zeros(n_rows, np.int64),
    }
    b = ChunkSampler(frames, horizon=2, gamma=0.9, time_limit=10).chunks_at(np.array([1, 3]))
    assert b.time is not None and b.next_time is not None
    assert (b.time * 10).flatten().tolist() == pytest.approx([1, 1, 3, 0])
    assert (b.next_time * 10).flatten().tolist() == pytest.approx([3, 3, 3, 2])
    assert ChunkSampler(frames, horizon=2, gamma=0.9).chunks_at(np.array([1])).time is None


def test_evaluation_reads_the_clock_as_training_does() -> None:
    """A Q trace of a clock-reading critic (plot-q, the suite's OPE) feeds it the episode
    clock of the stored columns, the values the sampler gives in training; without the
    clock such a critic refuses rather than guessing."""
    import torch

    from aloe.critics.chunked_q import CriticConfig
    from aloe.critics.ensemble import build_critic
    from aloe.evaluation.qtrace import EpisodeTrace, chunk_windows, critic_q_fn, q_trace
    from aloe.nn import Normalizer

    torch.manual_seed(0)
    cfg = CriticConfig(arch="mlp", num_q=2, time_features=True)
    critic = build_critic(cfg, 3, 2, 1, lambda: Normalizer(3), horizon=2)
    n = 7
    source = np.array(["policy"] * 3 + ["human"] * 2 + ["policy"] * 2)
    fragment = np.array([0, 0, 0, 1, 1, 2, 2])
    rng = np.random.default_rng(0)
    trace = EpisodeTrace(
        states=rng.normal(size=(n, 3)).astype(np.float32),
        actions=rng.normal(size=(n, 2)).astype(np.float32),
        source=source,
        fragment=fragment,
        failure_reason=np.array([""] * n),
        success=False,
        title="",
    )
    q = q_trace(critic_q_fn(critic, torch.device("cpu")), trace, horizon=2, time_limit=10)
    frames = {D.EPISODE: np.zeros(n), D.FRAGMENT: fragment, D.SOURCE: source}
    chunks, valid = chunk_windows(trace.actions, fragment, 2)
    critic.eval()
    with torch.no_grad():
        expected = critic(
            torch.as_tensor(trace.states),
            torch.zeros(n, dtype=torch.long),
            torch.as_tensor(chunks),
            torch.as_tensor(valid, dtype=torch.float32),
            torch.as_tensor(D.episode_clock(frames, 10)),
        )
    np.testing.assert_allclose(q, expected.numpy(), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="episode clock"):
        q_trace(critic_q_fn(critic, torch.device("cpu")), trace, horizon=2)

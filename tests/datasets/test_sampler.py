"""ChunkSampler: exact chunk sums and masks on hand-built episodes, against a slow reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from aloe import data
from aloe.datasets.sampler import ChunkSampler

GAMMA = 0.9
C_FAIL = 10.0

# A fragment: (source, per-step rewards, how its last step ends: "done", "truncated" or None).
Fragment = tuple[str, list[float], str | None]


def make_frames(episodes: list[list[Fragment]]) -> dict[str, np.ndarray]:
    """Frames in global order. Row i has state (i, 0), next state (1000 + i, 1), action (i, e, f)."""
    cols: dict[str, list] = {name: [] for name in data.STEP_COLUMNS}
    extra: dict[str, list] = {"episode_index": [], "frame_index": [], "task_index": []}
    row = 0
    for e, fragments in enumerate(episodes):
        frame = 0
        for f, (source, rewards, end) in enumerate(fragments):
            for k, r in enumerate(rewards):
                last = k == len(rewards) - 1
                cols[data.STATE].append([row, 0.0])
                cols[data.NEXT_STATE].append([1000.0 + row, 1.0])
                cols[data.ACTION].append([row, e, f])
                cols[data.REWARD].append(r)
                cols[data.DONE].append(last and end == "done")
                cols[data.TRUNCATED].append(last and end == "truncated")
                cols[data.SUCCESS].append(last and end == "done" and r == 0.0)
                cols[data.INTERVENTION].append(source == "human")
                cols[data.SOURCE].append(source)
                cols[data.POLICY_VERSION].append(1 if source == "policy" else -1)
                cols[data.FRAGMENT].append(f)
                failed = last and end == "done" and r != 0.0
                cols[data.FAILURE_REASON].append("collision" if failed else "")
                extra["episode_index"].append(e)
                extra["frame_index"].append(frame)
                extra["task_index"].append(e % 2)
                row += 1
                frame += 1
    frames = {name: np.array(v, dtype=data.STEP_COLUMNS[name]) for name, v in cols.items()}
    frames |= {name: np.array(v, dtype=np.int64) for name, v in extra.items()}
    frames["index"] = np.arange(row, dtype=np.int64)
    return frames


def reference(frames: dict[str, np.ndarray], t: int, h: int, gamma: float) -> dict:
    """The chunk at row t, by walking forward one step at a time."""

    def key(i: int) -> tuple[int, int]:
        return frames["episode_index"][i], frames[data.FRAGMENT][i]

    end = t
    while end < len(frames["index"]) and key(end) == key(t):
        end += 1
    r = frames[data.REWARD].astype(np.float64)
    n = min(h, end - t)
    return {
        "n": n,
        "reward": sum(gamma**k * r[t + k] for k in range(n)),
        "mc_return": sum(gamma**k * r[t + k] for k in range(end - t)),
        "discount": gamma**n,
        "bootstrap": 0.0 if frames[data.DONE][t + n - 1] else 1.0,
        "next_state": frames[data.NEXT_STATE][t + n - 1],
        "actions": frames[data.ACTION][t : t + n],
    }


def check_against_reference(frames: dict[str, np.ndarray], h: int, gamma: float) -> None:
    sampler = ChunkSampler(frames, horizon=h, gamma=gamma)
    num = len(frames["index"])
    batch = sampler.chunks_at(np.arange(num))
    for t in range(num):
        ref = reference(frames, t, h, gamma)
        n = ref["n"]
        assert batch.valid[t].tolist() == [1.0] * n + [0.0] * (h - n)
        acts = batch.actions[t].numpy()
        np.testing.assert_array_equal(acts[:n], ref["actions"])
        assert not acts[n:].any()
        # No boundary crossed: every valid action comes from t's own episode and fragment.
        assert (acts[:n, 1] == frames["episode_index"][t]).all()
        assert (acts[:n, 2] == frames[data.FRAGMENT][t]).all()
        np.testing.assert_array_equal(acts[:n, 0], np.arange(t, t + n))
        for name in ("reward", "mc_return", "discount", "bootstrap"):
            got = float(getattr(batch, name)[t])
            assert got == pytest.approx(ref[name], rel=1e-5, abs=1e-5), (name, t)
        np.testing.assert_array_equal(batch.next_state[t].numpy(), ref["next_state"])
        np.testing.assert_array_equal(batch.state[t].numpy(), frames[data.STATE][t])
        assert int(batch.global_index[t]) == t
        assert int(batch.task_index[t]) == frames["task_index"][t]
        assert data.SOURCES[int(batch.source[t])] == frames[data.SOURCE][t]


def chunk(sampler: ChunkSampler, t: int) -> dict:
    b = sampler.chunks_at(np.array([t]))
    return {name: value[0] for name, value in b._asdict().items() if value is not None}


def test_success_terminates_inside_chunk() -> None:
    frames = make_frames([[("demo", [-1, -1, -1, -1, 0], "done")]])
    s = ChunkSampler(frames, horizon=3, gamma=GAMMA)
    c = chunk(s, 0)
    assert float(c["reward"]) == pytest.approx(-1 - 0.9 - 0.81)
    assert float(c["bootstrap"]) == 1.0 and float(c["discount"]) == pytest.approx(0.729)
    assert c["next_state"].tolist() == [1002.0, 1.0]
    assert float(c["mc_return"]) == pytest.approx(-1 - 0.9 - 0.81 - 0.729)
    c = chunk(s, 3)
    assert c["valid"].tolist() == [1.0, 1.0, 0.0]
    assert c["actions"][:, 0].tolist() == [3.0, 4.0, 0.0] and not c["actions"][2].any()
    assert float(c["reward"]) == pytest.approx(-1.0)
    assert float(c["bootstrap"]) == 0.0 and float(c["discount"]) == pytest.approx(0.81)
    assert c["next_state"].tolist() == [1004.0, 1.0]


def test_failure_terminates_inside_chunk() -> None:
    frames = make_frames([[("policy", [-1, -1, -1, -C_FAIL], "done")]])
    c = chunk(ChunkSampler(frames, horizon=3, gamma=GAMMA), 2)
    assert c["valid"].tolist() == [1.0, 1.0, 0.0]
    assert float(c["reward"]) == pytest.approx(-1 - 0.9 * C_FAIL)
    assert float(c["mc_return"]) == pytest.approx(-1 - 0.9 * C_FAIL)
    assert float(c["bootstrap"]) == 0.0


def test_truncation_bootstraps_from_last_state() -> None:
    frames = make_frames([[("policy", [-1, -1, -1, -1], "truncated")]])
    c = chunk(ChunkSampler(frames, horizon=3, gamma=GAMMA), 2)
    assert c["valid"].tolist() == [1.0, 1.0, 0.0]
    assert float(c["reward"]) == pytest.approx(-1.9)
    assert float(c["bootstrap"]) == 1.0 and float(c["discount"]) == pytest.approx(0.81)
    assert c["next_state"].tolist() == [1003.0, 1.0]


def test_fragment_shorter_than_horizon() -> None:
    frames = make_frames([[("demo", [-1, -2], None)], [("human", [-1, -1, 0], "done")]])
    s = ChunkSampler(frames, horizon=5, gamma=GAMMA)
    c = chunk(s, 0)
    assert c["valid"].tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert float(c["reward"]) == pytest.approx(-1 - 1.8)
    assert float(c["bootstrap"]) == 1.0 and float(c["discount"]) == pytest.approx(0.81)
    assert c["next_state"].tolist() == [1001.0, 1.0]
    assert float(chunk(s, 2)["bootstrap"]) == 0.0


def test_takeover_stops_at_the_cut() -> None:
    episode = [("policy", [-1, -1, -C_FAIL], "done"), ("human", [-1, -1, 0], "done")]
    s = ChunkSampler(make_frames([episode]), horizon=4, gamma=GAMMA)
    c = chunk(s, 1)
    assert c["valid"].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert c["actions"][:, 0].tolist() == [1.0, 2.0, 0.0, 0.0]
    # The policy fragment's last next-state, not the human fragment's first state (row 3).
    assert c["next_state"].tolist() == [1002.0, 1.0]
    assert float(c["reward"]) == pytest.approx(-1 - 0.9 * C_FAIL)
    assert float(c["bootstrap"]) == 0.0
    assert float(chunk(s, 0)["mc_return"]) == pytest.approx(-1 - 0.9 - 0.81 * C_FAIL)
    h = chunk(s, 3)
    assert data.SOURCES[int(h["source"])] == "human"
    assert float(h["reward"]) == pytest.approx(-1.9) and float(h["bootstrap"]) == 0.0


def test_horizon_one_is_one_step_td() -> None:
    frames = make_frames(
        [
            [("policy", [-1, -1, -C_FAIL], "done"), ("human", [-1, 0], "done")],
            [("demo", [-1], None)],
        ]
    )
    b = ChunkSampler(frames, horizon=1, gamma=GAMMA).chunks_at(np.arange(6))
    assert b.actions.shape == (6, 1, 3) and (b.valid == 1).all()
    np.testing.assert_array_equal(b.actions[:, 0].numpy(), frames[data.ACTION])
    np.testing.assert_allclose(b.reward.numpy(), frames[data.REWARD])
    np.testing.assert_allclose(b.discount.numpy(), GAMMA)
    np.testing.assert_array_equal(b.next_state.numpy(), frames[data.NEXT_STATE])
    np.testing.assert_array_equal(b.bootstrap.numpy(), 1.0 - frames[data.DONE])


fragments = st.tuples(
    st.sampled_from(data.SOURCES),
    st.integers(1, 9),
    st.sampled_from(["done", "truncated", None]),
)


@settings(max_examples=60, deadline=None)
@given(
    layout=st.lists(st.lists(fragments, min_size=1, max_size=3), min_size=1, max_size=4),
    h=st.integers(1, 12),
    gamma=st.sampled_from([0.5, 0.9, 0.99, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_chunks_match_reference(layout: list, h: int, gamma: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    episodes = [
        [(src, rng.normal(size=length).round(3).tolist(), end) for src, length, end in ep]
        for ep in layout
    ]
    check_against_reference(make_frames(episodes), h, gamma)


def three_sources(steps: int = 30) -> dict[str, np.ndarray]:
    return make_frames([[(src, [-1.0] * steps, "truncated")] for src in data.SOURCES])


def test_source_weights_shift_frequencies() -> None:
    s = ChunkSampler(three_sources(), horizon=4, gamma=GAMMA, source_weights={"human": 2})
    counts = np.bincount(s.sample(20_000).source.numpy(), minlength=3) / 20_000
    np.testing.assert_allclose(counts, [0.25, 0.25, 0.5], atol=0.02)
    # Per step, not per source: a source with twice the steps is drawn twice as often.
    frames = make_frames([[("demo", [-1.0] * 20, None)], [("policy", [-1.0] * 40, None)]])
    counts = np.bincount(ChunkSampler(frames, horizon=4, gamma=GAMMA).sample(20_000).source)
    np.testing.assert_allclose(counts[:2] / 20_000, [1 / 3, 2 / 3], atol=0.02)


def test_zero_weight_excludes_a_source() -> None:
    s = ChunkSampler(three_sources(), horizon=4, gamma=GAMMA, source_weights={"policy": 0})
    assert len(s) == 60
    sources = s.sample(5_000).source
    assert data.SOURCES.index("policy") not in sources.tolist()
    assert len(ChunkSampler(three_sources(), horizon=4, gamma=GAMMA)) == 90


def test_state_dict_round_trip_and_seed_determinism() -> None:
    frames = three_sources()
    s = ChunkSampler(frames, horizon=4, gamma=GAMMA, seed=3)
    s.sample(8)
    saved = s.state_dict()
    expected = s.sample(16)
    other = ChunkSampler(frames, horizon=4, gamma=GAMMA, seed=99)
    other.load_state_dict(saved)
    for a, b in zip(expected, other.sample(16), strict=True):
        assert (a is None and b is None) or torch.equal(a, b)
    again = ChunkSampler(frames, horizon=4, gamma=GAMMA, seed=3)
    again.sample(8)
    assert torch.equal(again.sample(16).global_index, expected.global_index)


def test_sample_shapes_and_dtypes() -> None:
    b = ChunkSampler(three_sources(), horizon=5, gamma=GAMMA).sample(7)
    assert b.state.shape == (7, 2) and b.actions.shape == (7, 5, 3) and b.valid.shape == (7, 5)
    for name in ("reward", "discount", "bootstrap", "mc_return"):
        assert getattr(b, name).shape == (7,) and getattr(b, name).dtype == torch.float32
    for name in ("task_index", "source", "global_index"):
        assert getattr(b, name).dtype == torch.int64


def test_pixels_of_this_and_the_next_state_travel_with_the_chunk() -> None:
    """An actor that reads pixels gets s_t's images and s_{t+n}'s (the row after the chunk's
    last step, by NEXT_PIXELS_ROW), uint8; a state run's batch has none."""
    episode = [("policy", [-1, -1, -C_FAIL], "done"), ("human", [-1, -1, 0], "done")]
    frames = make_frames([episode])
    assert ChunkSampler(frames, horizon=2, gamma=GAMMA).sample(3).images is None
    n = len(frames[data.ACTION])  # row r's images are all r; s_{t+1}'s row is r + 1 (capped)
    frames[data.PIXELS] = np.arange(n, dtype=np.uint8)[:, None, None, None, None] * np.ones(
        (1, 2, 3, 3, 3), np.uint8
    )
    frames[data.NEXT_PIXELS_ROW] = np.minimum(np.arange(n) + 1, n - 1)
    b = ChunkSampler(frames, horizon=2, gamma=GAMMA).chunks_at(np.array([0, 1, 3, 5]))
    assert b.images.dtype == torch.uint8 and b.images.shape == (4, 2, 3, 3, 3)
    assert b.images[:, 0, 0, 0, 0].tolist() == [0, 1, 3, 5]
    # chunk at 1 stops at the takeover cut (row 2): its next images are row 3's
    assert b.next_images[:, 1, 0, 0, 0].tolist() == [2, 3, 5, 5]
    part = b.rows(slice(1, 3))
    assert part.images.shape[0] == 2 and part.next_images[:, 0, 0, 0, 0].tolist() == [3, 5]
    bad = dict(frames)
    bad[data.PIXELS] = frames[data.PIXELS][:-1]
    with pytest.raises(ValueError, match="observation.pixels"):
        ChunkSampler(bad, horizon=2, gamma=GAMMA)


def test_from_store_uses_load_frames() -> None:
    class Store:
        def load_frames(self) -> dict[str, np.ndarray]:
            return three_sources(5)

    s = ChunkSampler.from_store(Store(), horizon=2, gamma=GAMMA, seed=1)
    assert len(s) == 15 and s.horizon == 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"horizon": 0}, "horizon"),
        ({"gamma": 0.0}, "gamma"),
        ({"gamma": 1.5}, "gamma"),
        ({"source_weights": {"robot": 1.0}}, "allowed"),
        ({"source_weights": {"demo": -1.0}}, "source_weights"),
        ({"source_weights": {"demo": 0, "policy": 0, "human": 0}}, "every step"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ChunkSampler(three_sources(5), **({"horizon": 3, "gamma": GAMMA} | kwargs))


def test_bad_frames_and_calls() -> None:
    empty = {name: v[:0] for name, v in three_sources(5).items()}
    with pytest.raises(ValueError, match="at least one step"):
        ChunkSampler(empty, horizon=3, gamma=GAMMA)
    mid = three_sources(5)
    mid[data.DONE][2] = True
    with pytest.raises(ValueError, match="not the last step"):
        ChunkSampler(mid, horizon=3, gamma=GAMMA)
    split = three_sources(5)
    split["episode_index"][12:] = 0
    with pytest.raises(ValueError, match="contiguous"):
        ChunkSampler(split, horizon=3, gamma=GAMMA)
    missing = three_sources(5)
    del missing["task_index"]
    with pytest.raises(ValueError, match="task_index"):
        ChunkSampler(missing, horizon=3, gamma=GAMMA)
    s = ChunkSampler(three_sources(5), horizon=3, gamma=GAMMA)
    with pytest.raises(ValueError, match="batch_size"):
        s.sample(0)
    with pytest.raises(ValueError, match="indices"):
        s.chunks_at(np.array([15]))


@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    frames = make_frames([[("policy", [-1, -1, -C_FAIL], "done"), ("human", [-1, -1, 0], "done")]])
    rows = np.arange(6)
    cpu = ChunkSampler(frames, horizon=4, gamma=GAMMA).chunks_at(rows)
    gpu = ChunkSampler(frames, horizon=4, gamma=GAMMA, device="cuda").chunks_at(rows)
    for a, b in zip(cpu, gpu, strict=True):
        assert b.device.type == "cuda" and torch.equal(a, b.cpu())

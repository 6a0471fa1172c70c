"""HG-DAgger's aggregation: which fragments enter the training set."""

from __future__ import annotations

import numpy as np

from aloe import data as D
from aloe.algos.dagger import dagger_rows

# (episode, fragment, source, length, ends in success, in the training set?)
FRAGMENTS = [
    (0, 0, "demo", 3, True, True),  # successful demonstration
    (1, 0, "demo", 2, False, False),  # failed demonstration
    (2, 0, "policy", 3, False, False),  # policy cut by a takeover (labelled failure) ...
    (2, 1, "human", 2, True, True),  # ... and the operator's correction
    (3, 0, "policy", 4, True, True),  # autonomous success
    (4, 0, "policy", 2, False, False),  # takeover with hand-back:
    (4, 1, "human", 2, False, True),  # correction handed back (no outcome): still a label
    (4, 2, "policy", 3, True, True),  # the policy then succeeds on its own
    (5, 0, "policy", 2, False, False),  # takeover ...
    (5, 1, "human", 3, False, True),  # ... and a correction that times out: still a label
    (6, 0, "policy", 5, False, False),  # autonomous failure
]


def frames() -> D.Frames:
    cols: dict[str, list] = {k: [] for k in ("episode_index", D.FRAGMENT, D.SOURCE, D.SUCCESS)}
    for ep, frag, source, n, success, _ in FRAGMENTS:
        cols["episode_index"] += [ep] * n
        cols[D.FRAGMENT] += [frag] * n
        cols[D.SOURCE] += [source] * n
        cols[D.SUCCESS] += [False] * (n - 1) + [success]
    out = {k: np.asarray(v) for k, v in cols.items()}
    out[D.SOURCE] = out[D.SOURCE].astype(object)
    out[D.ACTION] = np.zeros((len(out[D.SOURCE]), 4), np.float32)
    return D.Frames(out)


def test_dagger_rows_hand_built() -> None:
    expected = np.concatenate([[keep] * n for *_, n, _, keep in FRAGMENTS])
    assert np.array_equal(dagger_rows(frames()), expected)


def test_whole_fragments_enter_or_none() -> None:
    f = frames()
    keep = dagger_rows(f)
    starts, ends = f.fragment_bounds()
    for s, e in zip(starts, ends, strict=True):
        assert keep[s:e].all() or not keep[s:e].any()


def test_fragment_bounds_split_on_episode_and_fragment() -> None:
    starts, ends = frames().fragment_bounds()
    lengths = [n for *_, n, _, _ in FRAGMENTS]
    assert list(ends - starts) == lengths and starts[0] == 0 and ends[-1] == sum(lengths)


def test_empty_frames() -> None:
    empty = frames().select(np.zeros(0, dtype=bool))
    assert dagger_rows(empty).shape == (0,)

"""The buffer's frames and their boundary helpers, on a hand-written buffer."""

from __future__ import annotations

import numpy as np

from aloe import data as D

# Four episodes: 0 = a demo that succeeds; 1 = the policy, a takeover, the operator succeeds;
# 2 = the policy fails (a success flag on its first row is not its outcome); 3 = one demo
# step. Episodes 2 and 3 meet with the same fragment index: that boundary comes from the
# episode column alone.
EPISODE = [0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 3]
FRAGMENT = [0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0]
SOURCE = ["demo"] * 3 + ["policy"] * 2 + ["human"] * 3 + ["policy"] * 2 + ["demo"]
SUCCESS = [0, 0, 1, 0, 0, 0, 0, 1, 1, 0, 0]


def frames() -> D.Frames:
    n = len(EPISODE)
    return D.Frames(
        {
            D.EPISODE: np.array(EPISODE, dtype=np.int64),
            D.FRAGMENT: np.array(FRAGMENT, dtype=np.int32),
            D.SOURCE: np.array(SOURCE, dtype=object),
            D.SUCCESS: np.array(SUCCESS, dtype=bool),
            D.ACTION: np.arange(n * 2, dtype=np.float32).reshape(n, 2),
        }
    )


def test_runs_split_where_any_key_changes() -> None:
    episode, fragment = np.array(EPISODE), np.array(FRAGMENT)
    assert np.flatnonzero(D.run_starts(episode)).tolist() == [0, 3, 8, 10]
    assert np.flatnonzero(D.run_starts(episode, fragment)).tolist() == [0, 3, 5, 8, 10]
    assert np.flatnonzero(D.run_ends(episode)).tolist() == [2, 7, 9, 10]
    starts, ends = D.run_bounds(episode, fragment)
    assert starts.tolist() == [0, 3, 5, 8, 10] and ends.tolist() == [3, 5, 8, 10, 11]
    source = np.array(SOURCE, dtype=object)
    assert np.flatnonzero(D.run_starts(source)).tolist() == [0, 3, 5, 8, 10]


def test_one_row_and_no_rows() -> None:
    one, none = np.array([7]), np.array([], dtype=np.int64)
    assert D.run_starts(one).tolist() == [True] and D.run_ends(one).tolist() == [True]
    assert D.run_starts(none).shape == (0,) and D.run_ends(none).shape == (0,)
    starts, ends = D.run_bounds(none)
    assert starts.shape == ends.shape == (0,)


def test_frames_boundaries() -> None:
    f = frames()
    assert np.flatnonzero(f.episode_ends()).tolist() == [2, 7, 9, 10]
    starts, ends = f.fragment_bounds()
    assert starts.tolist() == [0, 3, 5, 8, 10] and ends.tolist() == [3, 5, 8, 10, 11]
    # episodes 0 and 1 end in success (1 through the operator); 2's first-row flag does not count
    assert f.successful_episodes().tolist() == [True] * 8 + [False] * 3


def test_select_keeps_every_column_and_is_a_mapping() -> None:
    f = frames()
    assert f.rows == 11 and len(f) == 5  # len: columns, as for any Mapping
    assert set(f) == {D.EPISODE, D.FRAGMENT, D.SOURCE, D.SUCCESS, D.ACTION}
    picked = f.select(f[D.SOURCE] == "human")
    assert isinstance(picked, D.Frames) and picked.rows == 3 and set(picked) == set(f)
    assert picked[D.ACTION].tolist() == f[D.ACTION][5:8].tolist()
    assert np.flatnonzero(picked.episode_ends()).tolist() == [2]
    empty = f.select(np.zeros(f.rows, dtype=bool))
    assert empty.rows == 0 and empty.successful_episodes().shape == (0,)
    assert empty.fragment_bounds()[0].shape == (0,)


def test_frame_columns_and_episode_seeds_are_pinned() -> None:
    """Resumed runs and stored runs depend on these: they must not drift."""
    pinned = [*D.STEP_COLUMNS, "episode_index", "frame_index", "index", "task_index"]
    assert pinned == D.FRAME_COLUMNS
    assert D.episode_seed(0, 0, 0) == 0
    assert D.episode_seed(3, 2, 5) == 3 * 1_000_003 + 2 * 10_000 + 5

"""Action-chunk sampling for the chunked critic (Eq. 7) and the actor.

The contract, for a store's frames in global index order and a horizon h:

- A chunk may start at any step t of any fragment. It takes the exact executed actions
  a_{t:t+h} and never crosses a fragment (hence never an episode) boundary:
  n = min(h, steps left in t's fragment from t). Actions past n are zero with valid = 0.
- reward = sum_{k<n} gamma^k r_{t+k}; next_state = next.observation.state of step t+n-1
  (= s_{t+n}, the state the last executed action led to); discount = gamma^n.
- bootstrap = 0 when step t+n-1 has next.done (a success or a labelled failure: the
  return ends there), else 1. A termination or truncation may only flag a fragment's last
  step; anything else is rejected. `done` wins where both flags are set.
- Truncation (next.truncated: a time limit that is not a labelled failure) and fragments
  shorter than h keep bootstrap = 1: the target bootstraps from s_{t+n} with gamma^n. For
  a time limit that is not part of the task this is the unbiased target, and dropping such
  chunks would waste the tail of every truncated fragment. A takeover cut stops the chunk at
  the policy fragment's last step, so next_state is that step's next state, never the first
  state of the operator's fragment (the operator may have reset the simulator).
- mc_return = sum_{k} gamma^k r_{t+k} from t to the end of t's fragment, no bootstrap.
- source is the index into data.SOURCES, task_index the frame's task, index its global
  frame index (the `index` column).
- `sample` draws start steps uniformly over all steps, reweighted per source: the
  probability of a step is proportional to source_weights[source] (unnamed sources weigh
  1; weight 0 excludes a source). The draw uses a seeded numpy Generator whose state
  `state_dict`/`load_state_dict` save and restore for exact resumption.
- images / next_images: where the frames carry `PIXELS` (an actor that reads camera pixels),
  the cameras' images of s_t and of s_{t+n} (row `NEXT_PIXELS_ROW` of step t+n-1); else None.

Everything that depends only on the start step is precomputed in __init__, so `sample` is
a handful of gathers on `device`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import torch

from aloe.data import (
    ACTION,
    DONE,
    EPISODE,
    FRAGMENT,
    FRAME,
    INDEX,
    NEXT_PIXELS_ROW,
    NEXT_STATE,
    PIXELS,
    REWARD,
    SOURCE,
    SOURCES,
    STATE,
    TASK,
    TRUNCATED,
    ChunkBatch,
    episode_clock,
    run_bounds,
    run_starts,
)

REQUIRED_COLUMNS = (
    STATE,
    NEXT_STATE,
    ACTION,
    REWARD,
    DONE,
    TRUNCATED,
    SOURCE,
    FRAGMENT,
    EPISODE,
    FRAME,
    INDEX,
    TASK,
)


class _FrameStore(Protocol):
    def load_frames(self) -> Mapping[str, np.ndarray]: ...


class ChunkSampler:
    """Samples `ChunkBatch`es of horizon h from a store's frames (see the module docstring)."""

    def __init__(
        self,
        frames: Mapping[str, np.ndarray],
        *,
        horizon: int,
        gamma: float,
        source_weights: Mapping[str, float] | None = None,
        seed: int = 0,
        device: str | torch.device = "cpu",
        time_limit: int | None = None,
        clock: np.ndarray | None = None,
    ) -> None:
        """`time_limit` (the run's env.max_steps): batches carry the episode clock
        (`aloe.data.episode_clock`) at s_t and s_{t+n}; None: they do not. `clock` (N, 2):
        per-row features carried in the clock's place (the critic benchmark's privileged
        arm), s_{t+n}'s those of row t+n (of the fragment's last row at its end)."""
        if isinstance(horizon, bool) or not isinstance(horizon, int | np.integer) or horizon < 1:
            raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")
        if not 0.0 < float(gamma) <= 1.0:
            raise ValueError(f"gamma must lie in (0, 1], got {gamma!r}")
        num = _check_frames(frames)
        self.horizon = int(horizon)
        self.gamma = float(gamma)
        self.device = torch.device(device)
        self._rng = np.random.default_rng(seed)

        source = _source_ids(frames[SOURCE])
        seg_end = _fragment_ends(frames)
        rows = np.arange(num)
        n = np.minimum(self.horizon, seg_end - rows)
        last = rows + n - 1
        mc = _fragment_returns(frames[REWARD].astype(np.float64), seg_end, self.gamma)
        # The chunk reward is G_t - gamma^n G_{t+n}: O(N) and exact up to float64 rounding.
        tail = np.where(rows + n < seg_end, np.append(mc, 0.0)[rows + n], 0.0)
        discount = self.gamma ** n.astype(np.float64)
        reward = mc - discount * tail
        bootstrap = 1.0 - frames[DONE][last].astype(np.float64)

        def put(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
            a = np.ascontiguousarray(a)
            if (
                not a.flags.writeable
            ):  # arrays read from parquet are read-only; torch wants writable
                a = a.copy()
            return torch.as_tensor(a).to(self.device, dtype)

        self._num = num
        self._state = put(frames[STATE], torch.float32)
        self._next_state = put(frames[NEXT_STATE], torch.float32)
        actions = np.asarray(frames[ACTION], dtype=np.float32)
        # A zero row at position N is where padded action slots point.
        self._actions = put(np.concatenate([actions, np.zeros_like(actions[:1])]), torch.float32)
        self._n = put(n, torch.int64)
        self._floats = put(np.stack([reward, discount, bootstrap, mc], 1), torch.float32)
        ints = [last, frames[TASK], source, frames[INDEX]]
        self._ints = put(np.stack([np.asarray(c, dtype=np.int64) for c in ints], 1), torch.int64)
        self._offsets = torch.arange(self.horizon, device=self.device)
        self._pixels: torch.Tensor | None = None
        self._next_pixels: torch.Tensor | None = None
        if PIXELS in frames:  # uint8 (N, V, H, W, 3), gathered per batch (kept as uint8)
            self._pixels = put(frames[PIXELS], torch.uint8)
            self._next_pixels = put(np.asarray(frames[NEXT_PIXELS_ROW])[last], torch.int64)
        self._clock: torch.Tensor | None = None
        self._next_clock: torch.Tensor | None = None
        if clock is not None:
            given = np.asarray(clock, dtype=np.float32)
            if given.shape != (num, 2):
                raise ValueError(f"clock must have shape ({num}, 2), got {given.shape}")
            self._clock = put(given, torch.float32)
            self._next_clock = put(given[np.minimum(rows + n, seg_end - 1)], torch.float32)
        elif time_limit is not None:  # s_{t+n}: n more steps of the same fragment and source
            clock = episode_clock(frames, time_limit)
            more = np.stack([n * (frames[SOURCE] == "policy"), n], 1) / float(time_limit)
            self._clock = put(clock, torch.float32)
            self._next_clock = put(clock + more, torch.float32)
        self._set_weights(source, source_weights)

    @classmethod
    def from_store(cls, store: _FrameStore, **kwargs: Any) -> ChunkSampler:
        """Build from anything with `load_frames()` (an `EpisodeStore`); kwargs go to __init__."""
        return cls(store.load_frames(), **kwargs)

    def __len__(self) -> int:
        """The number of start steps `sample` can draw (those of sources with weight > 0)."""
        return int(self._grouped.size)

    def sample(self, batch_size: int) -> ChunkBatch:
        """Draw `batch_size` start steps (source-weighted, with replacement) and their chunks."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        group = self._rng.choice(self._active.size, size=batch_size, p=self._probs)
        within = self._rng.integers(0, self._counts[group])
        return self._gather(self._grouped[self._starts[group] + within])

    def chunks_at(self, indices: np.ndarray) -> ChunkBatch:
        """The chunks starting at the given rows (positions in `frames`), in that order."""
        rows = np.asarray(indices)
        if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer):
            raise ValueError(f"indices must be a 1-D integer array, got {rows.dtype} {rows.shape}")
        if rows.size and (rows.min() < 0 or rows.max() >= self._num):
            raise ValueError(
                f"indices must lie in [0, {self._num}), got {rows.min()}..{rows.max()}"
            )
        return self._gather(rows)

    def state_dict(self) -> dict[str, Any]:
        """The sampler's RNG state (JSON-able); the frames are not part of it."""
        return {"rng": self._rng.bit_generator.state}

    def load_state_dict(self, d: Mapping[str, Any]) -> None:
        """Restore the RNG state saved by `state_dict`: the next batches repeat exactly."""
        self._rng.bit_generator.state = dict(d["rng"])

    def _set_weights(self, source: np.ndarray, weights: Mapping[str, float] | None) -> None:
        w = np.ones(len(SOURCES))
        for name, value in (weights or {}).items():
            if name not in SOURCES:
                raise ValueError(f"source_weights has unknown source {name!r}, allowed {SOURCES}")
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"source_weights[{name!r}] must be finite and >= 0, got {value}")
            w[SOURCES.index(name)] = float(value)
        counts = np.bincount(source, minlength=len(SOURCES))
        mass = w * counts
        active = np.flatnonzero(mass > 0)
        if active.size == 0:
            raise ValueError(f"source_weights {dict(weights or {})} exclude every step")
        # Draw the source first, then a step within it: exact, and O(batch) per draw.
        self._active = active
        self._probs = mass[active] / mass[active].sum()
        self._counts = counts[active]
        self._starts = np.concatenate([[0], np.cumsum(self._counts)[:-1]])
        order = np.argsort(source, kind="stable")
        keep = np.isin(source[order], active)
        self._grouped = order[keep]

    def _gather(self, rows_np: np.ndarray) -> ChunkBatch:
        rows = torch.as_tensor(rows_np, dtype=torch.int64).to(self.device)
        valid = self._offsets < _take(self._n, rows)[:, None]
        steps = torch.where(valid, rows[:, None] + self._offsets, self._num).view(-1)
        # Transposed copies, so that each returned column is contiguous.
        reward, discount, bootstrap, mc_return = _take(self._floats, rows).T.contiguous()
        last, task_index, source, index = _take(self._ints, rows).T.contiguous()
        images = next_images = None
        if self._pixels is not None and self._next_pixels is not None:
            images = _take(self._pixels, rows)
            next_images = _take(self._pixels, _take(self._next_pixels, rows))
        return ChunkBatch(
            state=_take(self._state, rows),
            actions=_take(self._actions, steps).view(*valid.shape, -1),
            valid=valid.float(),
            reward=reward,
            next_state=_take(self._next_state, last),
            discount=discount,
            bootstrap=bootstrap,
            mc_return=mc_return,
            task_index=task_index,
            source=source,
            global_index=index,
            images=images,
            next_images=next_images,
            time=None if self._clock is None else _take(self._clock, rows),
            next_time=None if self._next_clock is None else _take(self._next_clock, rows),
        )


def _take(table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """table[rows] along the first axis.

    On CPU numpy's single-threaded gather: torch's multi-threaded one stalls for
    milliseconds when another process holds a core, and a batch is too small to gain.
    """
    if table.device.type == "cpu":
        return torch.from_numpy(table.numpy()[rows.numpy()])
    return table.index_select(0, rows)


def _check_frames(frames: Mapping[str, np.ndarray]) -> int:
    """Return the number of rows; raise ValueError on a missing or misshaped column."""
    for name in REQUIRED_COLUMNS:
        if name not in frames:
            raise ValueError(f"frames column {name!r} is missing (need {REQUIRED_COLUMNS})")
    num = len(frames[ACTION])
    if num == 0:
        raise ValueError("frames must hold at least one step, got 0 rows")
    for name in REQUIRED_COLUMNS:
        if len(frames[name]) != num:
            raise ValueError(f"frames column {name!r} has {len(frames[name])} rows, expected {num}")
    for name in (STATE, NEXT_STATE, ACTION):
        if np.ndim(frames[name]) != 2:
            raise ValueError(f"frames column {name!r} must be 2-D, got {np.shape(frames[name])}")
    if PIXELS in frames:
        shape = np.shape(frames[PIXELS])
        if len(shape) != 5 or shape[0] != num or shape[-1] != 3:
            raise ValueError(f"frames column {PIXELS!r} must be (N={num}, V, H, W, 3), got {shape}")
        if len(frames.get(NEXT_PIXELS_ROW, ())) != num:
            raise ValueError(f"frames with {PIXELS!r} need {NEXT_PIXELS_ROW!r} for each row")
    return num


def _source_ids(source: np.ndarray) -> np.ndarray:
    names, inverse = np.unique(np.asarray(source).astype(str), return_inverse=True)
    bad = sorted(set(names.tolist()) - set(SOURCES))
    if bad:
        raise ValueError(f"frames column 'source' has {bad}, allowed {SOURCES}")
    return np.array([SOURCES.index(s) for s in names], dtype=np.int64)[inverse.reshape(-1)]


def _fragment_ends(frames: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per row, the exclusive end position of its fragment; checks that fragments are sane.

    A fragment is a maximal run of rows with the same (episode_index, fragment_index). Each
    must appear once, with consecutive frame indices, and flag done/truncated only last.
    """
    episode = np.asarray(frames[EPISODE], dtype=np.int64)
    fragment = np.asarray(frames[FRAGMENT], dtype=np.int64)
    num = episode.size
    starts, ends = run_bounds(episode, fragment)
    keys = np.unique(np.stack([episode[starts], fragment[starts]], 1), axis=0)
    if len(keys) != len(starts):
        raise ValueError("frames must keep each (episode_index, fragment_index) contiguous")
    frame = np.asarray(frames[FRAME], dtype=np.int64)
    gap = np.flatnonzero(~run_starts(episode, fragment)[1:] & (np.diff(frame) != 1))
    if gap.size:
        raise ValueError(f"frame_index jumps inside a fragment after row {gap[0]}")
    not_last = np.ones(num, dtype=bool)
    not_last[ends - 1] = False
    for name in (DONE, TRUNCATED):
        bad = np.flatnonzero(np.asarray(frames[name], dtype=bool) & not_last)
        if bad.size:
            raise ValueError(
                f"{name} is set on row {bad[0]}, which is not the last step of its fragment"
            )
    return np.repeat(ends, ends - starts)


def _fragment_returns(reward: np.ndarray, seg_end: np.ndarray, gamma: float) -> np.ndarray:
    """G_t = r_t + gamma G_{t+1} within each fragment, by pointer jumping (log2 passes).

    Unlike a gamma^-t scaled prefix sum, this never overflows on long fragments.
    """
    num = reward.size
    following = np.arange(1, num + 1)
    nxt = np.append(np.where(following < seg_end, following, num), num)
    value = np.append(reward, 0.0)
    coef = np.append(np.full(num, gamma), 1.0)
    while (nxt[:num] != num).any():
        value = value + coef * value[nxt]
        coef = coef * coef[nxt]
        nxt = nxt[nxt]
    return value[:num]

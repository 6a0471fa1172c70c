"""The data model every part of aloe shares: recorded episodes, the buffer's frames and
sampled chunk batches.

An *episode* is one attempt at a task from a reset. It is made of *fragments*: contiguous
runs of steps produced by one source (`demo`, `policy` or `human`). Per-step columns use
LeRobot's field names where LeRobot has one; ours are `source`, `policy_version`,
`fragment_index`, `failure_reason`, `next.observation.state` and `sim.state`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch

SOURCES = ("demo", "policy", "human")

# Per-step columns an episode must carry, with their numpy dtype and per-step shape
# (None = the state or action dimension, given by the task).
STATE = "observation.state"
NEXT_STATE = "next.observation.state"
ACTION = "action"
REWARD = "next.reward"
DONE = "next.done"  # terminated: success or a labelled failure; never bootstrapped past
TRUNCATED = "next.truncated"  # cut without an outcome (time limit when it is not a failure)
SUCCESS = "next.success"
INTERVENTION = "complementary_info.is_intervention"
SOURCE = "source"
POLICY_VERSION = "policy_version"  # iteration of the policy that acted; -1 for demo/human
FRAGMENT = "fragment_index"  # index of the fragment within its episode
FAILURE_REASON = "failure_reason"  # "" except on the last step of a failed fragment
SIM_STATE = "sim.state"  # full simulator state before the step (float64), for evaluation

STEP_COLUMNS: dict[str, Any] = {
    STATE: np.float32,
    NEXT_STATE: np.float32,
    ACTION: np.float32,
    REWARD: np.float32,
    DONE: np.bool_,
    TRUNCATED: np.bool_,
    SUCCESS: np.bool_,
    INTERVENTION: np.bool_,
    SOURCE: object,
    POLICY_VERSION: np.int32,
    FRAGMENT: np.int32,
    FAILURE_REASON: object,
}
OPTIONAL_STEP_COLUMNS: dict[str, Any] = {SIM_STATE: np.float64}
# Camera images, uint8 (T, H, W, 3), the view before the step (aligned with `observation.state`).
# The store keeps them as videos, not in the data files.
IMAGE_PREFIX = "observation.images."

# Per-frame columns the store adds when it reads frames back (LeRobot's names).
EPISODE = "episode_index"  # the episode's index in the store
FRAME = "frame_index"  # the step's index within its episode
INDEX = "index"  # global frame index, over the whole store
TASK = "task_index"  # index into the store's instructions
# What training reads of the store: everything but the simulator states (evaluation's).
FRAME_COLUMNS = [*STEP_COLUMNS, EPISODE, FRAME, INDEX, TASK]
# In memory only, for an actor that reads camera pixels (`aloe.observation.Observations.frames`):
# each row's images, uint8 (N, V, H, W, 3) in the run's camera order, and the row whose images
# are s_{t+1}'s (the episode's next frame; its last frame: itself).
PIXELS = "observation.pixels"
NEXT_PIXELS_ROW = "next.observation.pixels_row"


def episode_seed(seed: int, iteration: int, i: int) -> int:
    """The seed of iteration k's i-th collected episode: a function of its place in the run,
    so that a resumed run collects the same episodes as an uninterrupted one."""
    return seed * 1_000_003 + iteration * 10_000 + i


def image_key(camera: str) -> str:
    """The episode column (and LeRobot feature) holding `camera`'s images."""
    return IMAGE_PREFIX + camera


@dataclass
class Episode:
    """One recorded attempt, as collection produces it and the store appends it.

    `steps` maps each column of `STEP_COLUMNS` (and optionally `sim.state` and camera images
    under `image_key(camera)`) to an array whose first axis is time. `meta` holds per-episode
    facts: `seed`, `iteration`, `sim_attrs` (JSON-able env attributes needed to restore the
    simulator), anything else JSON-able.
    """

    task: str  # the task's name, e.g. "peg-insert-side-v3"
    instruction: str  # the natural-language instruction (LeRobot's "task" string)
    steps: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(len(self.steps[ACTION]))

    @property
    def success(self) -> bool:
        return bool(self.steps[SUCCESS][-1]) if len(self) else False

    def validate(self) -> None:
        """Raise ValueError naming the first column that is missing or inconsistent."""
        n = len(self)
        if n == 0:
            raise ValueError(f"episode of task {self.task!r} has no steps")
        for name in STEP_COLUMNS:
            if name not in self.steps:
                raise ValueError(f"episode column {name!r} is missing")
        for name, arr in self.steps.items():
            if len(arr) != n:
                raise ValueError(f"episode column {name!r} has {len(arr)} rows, expected {n}")
        for name, arr in self.steps.items():
            if name.startswith(IMAGE_PREFIX) and (arr.dtype != np.uint8 or arr.ndim != 4):
                raise ValueError(f"episode column {name!r} must be uint8 (T, H, W, 3) images")
        bad = set(np.unique(self.steps[SOURCE]).tolist()) - set(SOURCES)
        if bad:
            raise ValueError(f"episode column 'source' has {sorted(bad)}, allowed {SOURCES}")


class ChunkBatch(NamedTuple):
    """A batch of action chunks for the chunked critic and the actor (B = batch, h = chunk).

    The reward sum, the bootstrap state and the discount follow Eq. 7 with the chunk cut at
    the fragment's end: n = number of valid steps (1..h),
    y = reward + discount * bootstrap * Q'(next_state, a' ~ pi).
    """

    state: torch.Tensor  # (B, S) s_t
    actions: torch.Tensor  # (B, h, A) the executed a_{t:t+h}; zeros past the fragment's end
    valid: torch.Tensor  # (B, h) 1.0 where the action was executed, 0.0 for padding
    reward: torch.Tensor  # (B,) sum_{k<n} gamma^k r_{t+k}
    next_state: torch.Tensor  # (B, S) s_{t+n}, the state after the last valid action
    discount: torch.Tensor  # (B,) gamma^n
    bootstrap: torch.Tensor  # (B,) 0.0 where the chunk reaches a termination, else 1.0
    mc_return: torch.Tensor  # (B,) Monte-Carlo return from t to the fragment's end (AWR)
    task_index: torch.Tensor  # (B,) int64, index into the store's instructions
    source: torch.Tensor  # (B,) int64, index into SOURCES
    global_index: torch.Tensor  # (B,) int64, global frame index of s_t (LeRobot `index`)
    # The cameras' pixels, uint8 (B, V, H, W, 3), at s_t and at s_{t+n}, for an actor that
    # reads them (a LeRobot VLA in an image run); None otherwise.
    images: torch.Tensor | None = None
    next_images: torch.Tensor | None = None
    # The episode clock (`episode_clock`), (B, 2) at s_t and at s_{t+n}, for a critic with
    # `critic.time_features`; None otherwise.
    time: torch.Tensor | None = None
    next_time: torch.Tensor | None = None

    def rows(self, part: slice) -> ChunkBatch:
        """The batch's rows `part` (every field sliced alike)."""
        return ChunkBatch._make(None if t is None else t[part] for t in self)

    def to(self, device: torch.device) -> ChunkBatch:
        """The batch on `device`."""
        return ChunkBatch._make(
            None if t is None else t.to(device, non_blocking=True) for t in self
        )


class Frames(Mapping[str, np.ndarray]):
    """The buffer's frames: column -> per-frame values, rows in global index order.

    Read-only view of what the store's `load_frames` returns, plus the boundary helpers.
    An episode is a run of rows with one `episode_index`; a fragment a run with one
    (`episode_index`, `fragment_index`). `len()` counts columns (it is a Mapping); `rows`
    counts frames.
    """

    def __init__(self, columns: Mapping[str, np.ndarray]) -> None:
        self._columns = dict(columns)

    def __getitem__(self, column: str) -> np.ndarray:
        return self._columns[column]

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)

    @property
    def rows(self) -> int:
        return len(self[ACTION])

    def select(self, mask: np.ndarray) -> Frames:
        """The rows where `mask` (bool (N,)) is set, every column."""
        return Frames({name: values[mask] for name, values in self.items()})

    def episode_ends(self) -> np.ndarray:
        """Bool mask (N,) of each episode's last row."""
        return run_ends(self[EPISODE])

    def fragment_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(start, end) positions of each fragment, end exclusive."""
        return run_bounds(self[EPISODE], self[FRAGMENT])

    def successful_episodes(self) -> np.ndarray:
        """Bool mask (N,) of the rows of episodes whose last step is a success."""
        episode = self[EPISODE]
        won = episode[self.episode_ends() & np.asarray(self[SUCCESS], dtype=bool)]
        return np.isin(episode, won)


def run_starts(*keys: np.ndarray) -> np.ndarray:
    """Bool mask (N,) of the rows that start a run: the first row, and every row that
    differs from the one before in any of the key columns."""
    arrays = [np.asarray(k) for k in keys]
    starts = np.zeros(len(arrays[0]), dtype=bool)
    starts[:1] = True
    for a in arrays:
        starts[1:] |= a[1:] != a[:-1]
    return starts


def run_ends(*keys: np.ndarray) -> np.ndarray:
    """Bool mask (N,) of the rows that end a run (see `run_starts`)."""
    ends = np.zeros(len(keys[0]), dtype=bool)
    ends[:-1] = run_starts(*keys)[1:]
    ends[-1:] = True
    return ends


def run_bounds(*keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) positions of each run (see `run_starts`), end exclusive."""
    starts = np.flatnonzero(run_starts(*keys))
    ends = np.append(starts[1:], len(keys[0]))[: starts.size]  # no rows: no runs
    return starts, ends


def episode_clock(frames: Mapping[str, np.ndarray], limit: int) -> np.ndarray:
    """The episode clock of every row, float32 (N, 2), from stored columns only:
    (policy steps taken in the episode before the row, steps since the row's fragment
    began), both / `limit` (the run's env.max_steps).

    The first counter is the one the time limit reads: the policy's budget is max_steps
    policy steps, operator steps not counted (aloe.rollout.correct). A robot has both
    counters too; `EpisodeClock` keeps them live, step by step, with the same values."""
    episode = np.asarray(frames[EPISODE])
    fragment = np.asarray(frames[FRAGMENT])
    policy = (np.asarray(frames[SOURCE]) == "policy").astype(np.int64)
    rows = np.arange(len(episode))
    taken = np.cumsum(policy) - policy  # policy steps before each row, over the buffer
    first = np.flatnonzero(run_starts(episode))
    at_start = np.repeat(taken[first], np.diff(np.append(first, len(episode))))
    starts = np.flatnonzero(run_starts(episode, fragment))
    began = np.repeat(starts, np.diff(np.append(starts, len(episode))))
    clock = np.stack([taken - at_start, rows - began], axis=1)
    return (clock / float(limit)).astype(np.float32)


class EpisodeClock:
    """`episode_clock` kept live during an episode (collection, serving, a robot): `tick`
    gives the clock of the step about to be taken, then counts it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.policy_steps = 0
        self.fragment_steps = 0
        self.fragment: int | None = None

    def tick(self, source: str, fragment: int) -> np.ndarray:
        """The clock (2,) of a step by `source` in fragment `fragment`, then that step counted."""
        if fragment != self.fragment:
            self.fragment = fragment
            self.fragment_steps = 0
        clock = np.array([self.policy_steps, self.fragment_steps], dtype=np.float64)
        self.policy_steps += source == "policy"
        self.fragment_steps += 1
        return (clock / float(self.limit)).astype(np.float32)

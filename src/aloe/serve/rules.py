"""What a recorded episode must be before `aloe serve` stores it.

The recording extension lets a robot write training data, so the server believes nothing it
is told. An episode is stored only when:

- its outcomes are where the rollout engine puts them (`aloe.rollout`): an outcome (success,
  failure, truncation) only on a fragment's last step, every fragment but the last ended by
  one, a success only on the episode's very last step, and the last step's outcome given;
- its seed is one the run assigns (`aloe.data.episode_seed(run seed, k, i)` for an
  iteration k up to the served one) and no stored or open episode has it;
- its instruction is one of the run's (no new task arrives over the wire);
- its states and actions lie inside the store's declared bounds: the demonstrations' range
  per dimension, widened on each side by `margin` × the widest dimension's range (`Bounds`;
  the widest, because a dimension that a few demonstrations barely vary, such as a goal
  fixed per seed, may vary as much as any other on other seeds).

A violation raises `EpisodeRefused`; the server then discards the whole episode.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from aloe import data as D
from aloe.serve.protocol import ProtocolError

BOUNDED = (D.STATE, D.NEXT_STATE, D.ACTION)
MIN_WIDTH = 1e-3  # a vector constant in the demonstrations still gets this much room


class EpisodeRefused(ProtocolError):
    """An episode the server will not store; it is discarded whole."""

    def __init__(self, message: str, code: str = "refused") -> None:
        super().__init__(code, message)


@dataclass(frozen=True)
class Bounds:
    """Per-dimension [lo, hi] for states (both `observation.state` and its next) and actions."""

    lo: dict[str, np.ndarray]
    hi: dict[str, np.ndarray]

    @classmethod
    def of_store(cls, store: Any, margin: float) -> Bounds | None:
        """The demonstrations' min and max (every stored episode's when there is no
        demonstration) widened by `margin` × the widest dimension's (max − min) on each
        side; None when the store is empty or `margin` is inf (no bounds)."""
        meta = store.episodes()
        if meta.num_rows == 0 or math.isinf(margin):
            return None
        demos = np.asarray(meta["demo_steps"].to_pylist()) > 0
        rows = demos if demos.any() else np.ones(meta.num_rows, bool)
        lo = {}
        hi = {}
        for key in BOUNDED:
            # next states continue the states: one range for both
            keys = (D.STATE, D.NEXT_STATE) if key != D.ACTION else (D.ACTION,)
            low = np.min([_stat(meta, k, "min")[rows].min(0) for k in keys], axis=0)
            high = np.max([_stat(meta, k, "max")[rows].max(0) for k in keys], axis=0)
            pad = margin * max(float((high - low).max()), MIN_WIDTH)
            lo[key], hi[key] = low - pad, high + pad
        return cls(lo, hi)

    def check(self, key: str, x: np.ndarray) -> None:
        """Refuse `x` (one step's vector, or (n, dim) rows) if any value is out of bounds."""
        lo = self.lo[key]
        hi = self.hi[key]
        out = np.argwhere((x < lo) | (x > hi))
        if len(out):
            where = tuple(int(i) for i in out[0])
            dim = where[-1]
            raise EpisodeRefused(
                f"{key}[{dim}] = {float(x[where]):g} is outside the store's bounds "
                f"[{lo[dim]:.4g}, {hi[dim]:.4g}] (the demonstrations' range with "
                "aloe serve --bounds-margin)"
            )


def _stat(meta: Any, key: str, stat: str) -> np.ndarray:
    column = meta[f"stats/{key}/{stat}"].combine_chunks()
    return column.flatten().to_numpy().reshape(meta.num_rows, -1)


class Seeds:
    """The run's episode seeds: which it assigns, which the store holds, which are open."""

    def __init__(self, run_seed: int, stored: Iterable[int | None]) -> None:
        self.base = D.episode_seed(run_seed, 0, 0)
        self.stride = D.episode_seed(run_seed, 1, 0) - self.base  # seeds per iteration
        self.stored = {int(s) for s in stored if s is not None}
        self.open: set[int] = set()

    def claim(self, seed: int | None, iteration: int) -> int:
        """Reserve `seed` for an episode of `iteration` (None: the next free one of it)."""
        if seed is None:
            seed = next(
                s
                for s in range(self.base + iteration * self.stride, 2**63)
                if s not in self.stored and s not in self.open
            )
        k, i = divmod(seed - self.base, self.stride)
        if seed < self.base or k > iteration:
            raise EpisodeRefused(
                f"seed ({seed}): not one this run assigns: aloe.data.episode_seed(run seed, "
                f"k, i) = {self.base} + {self.stride}·k + i for an iteration k in "
                f"0..{iteration} and i in 0..{self.stride - 1}"
            )
        if seed in self.stored:
            raise EpisodeRefused(f"seed ({seed}): the store already holds its episode")
        if seed in self.open:
            raise EpisodeRefused(f"seed ({seed}): another connection is recording it")
        self.open.add(seed)
        return seed

    def release(self, seed: int | None, stored: bool = False) -> None:
        if seed is not None:
            self.open.discard(seed)
            if stored:
                self.stored.add(seed)


def check_episode(ep: D.Episode, instructions: Iterable[str], bounds: Bounds | None) -> None:
    """The whole episode, as it would be stored: outcomes, instruction and bounds."""
    if ep.instruction not in set(instructions):
        raise EpisodeRefused(f"instruction ({ep.instruction[:60]!r}): not one of this run's")
    s = ep.steps
    n = len(s[D.ACTION])
    fragment = np.asarray(s[D.FRAGMENT])
    if fragment[0] != 0 or np.any(~np.isin(np.diff(fragment), (0, 1))):
        raise EpisodeRefused("fragment_index: fragments must count up from 0 in steps of 1")
    outcome = np.asarray(s[D.DONE], bool) | np.asarray(s[D.TRUNCATED], bool)
    success = np.asarray(s[D.SUCCESS], bool)
    last = np.r_[fragment[1:] != fragment[:-1], True]  # a fragment's last step
    misplaced = np.flatnonzero((outcome | success) & ~last)
    if len(misplaced):
        raise EpisodeRefused(
            f"step {misplaced[0]} of {n} has an outcome but is not its fragment's last step"
        )
    if not outcome[last].all():
        raise EpisodeRefused(f"fragment {fragment[last][~outcome[last]][0]} ends without outcome")
    if success[:-1].any():
        raise EpisodeRefused(f"step {np.flatnonzero(success)[0]} of {n} succeeds before the end")
    if bounds is not None:
        for key in BOUNDED:
            bounds.check(key, np.asarray(s[key]))

"""HG-DAgger (Appendix C-3): aggregate the operator's corrections and successful data, then
behaviour cloning (Eq. 16) on the aggregate. No value function.

Which rows enter the training set (`dagger_rows`), fragment by fragment:

- every `human` fragment: the operator's corrections are HG-DAgger's expert labels on the
  states the learner visits, whatever their outcome;
- a `demo` or `policy` fragment only when it ends in success: successful demonstrations
  (as the warm start uses) and the policy's own successful attempts. A policy fragment
  cut by a takeover is labelled a failure and never enters.

The store grows every iteration (D_i = D_{i−1} ∪ new data), so the aggregate does too, and
the actor is fine-tuned on it for `dagger.steps` steps per iteration; every preset gives it
as many actor updates as ALOE's and AWR's, with the same optimiser (`optim.*`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from aloe import data as D
from aloe.algos.aloe import UPDATE_COLUMNS
from aloe.algos.context import UpdateContext, mean_metric
from aloe.errors import require


@dataclass
class DaggerConfig:
    """HG-DAgger's own settings (`--dagger.*`)."""

    steps: int = 250
    """BC steps (Eq. 16) per iteration on the aggregate (as `aloe.actor_steps`)."""

    def validate(self, prefix: str = "") -> None:
        """Raise UsageError naming the first field out of range, `dagger.steps (-1): must be
        >= 0`; `prefix` leads the name ("config field " for a run's config)."""
        require(self.steps >= 0, f"{prefix}dagger.steps", self.steps, "must be >= 0")


def preset(name: str) -> DaggerConfig:
    """Preset `name`'s steps per iteration (smoke | default | paper | mt10): in each, as many
    as ALOE's actor steps, so that the two differ in the weights alone."""
    if name == "smoke":
        return DaggerConfig(steps=10)
    if name in ("default", "mt10"):
        return DaggerConfig(steps=200)
    return DaggerConfig()


def dagger_rows(frames: D.Frames) -> np.ndarray:
    """Bool mask (N,) of the rows in HG-DAgger's training set (see the module docstring)."""
    starts, ends = frames.fragment_bounds()
    source = np.asarray(frames[D.SOURCE]).astype(str)[starts]
    succeeded = np.asarray(frames[D.SUCCESS], dtype=bool)[ends - 1]
    keep = (source == "human") | succeeded
    return np.repeat(keep, ends - starts)


def update(ctx: UpdateContext[DaggerConfig]) -> dict[str, float]:
    """dagger.steps BC steps (Eq. 16) on the rows `dagger_rows` keeps; no value function,
    so ALOE's columns are null."""
    keep = dagger_rows(ctx.frames)
    sampler = ctx.sampler(ctx.frames.select(keep))
    bc = ctx.steps(ctx.settings.steps, ctx.learner.bc_step, sampler, f"dagger[{ctx.iteration}]")
    row = dict.fromkeys(UPDATE_COLUMNS, math.nan)
    return {**row, "bc_loss": mean_metric(bc, "bc/loss"), "dagger_rows": int(keep.sum())}

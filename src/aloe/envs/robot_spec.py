"""A robot run's sizes (`RobotSpec`, the `robot` row's section of `EnvConfig`) and the map
between a robot's action units and aloe's (`ActionUnits`): the one place for both
(the row itself is `aloe.envs.robot`).

aloe's policies act in [-1, 1] per action value (they clip to it); a robot's actions are in
its own units (an SO-101's joint positions in degrees, or in [-100, 100]). `ActionUnits` is
affine per action value: the dataset's minimum -> -1, its maximum -> +1. A robot run's
demonstrations are mapped into [-1, 1] when they are imported, `aloe serve` sends the
ranges in its metadata (`action_units`), and `aloe robot` maps the policy's actions back to
the robot's units and the leader arm's into [-1, 1] (`aloe.robot.lerobot_env`). Both ways
clip to the range: the robot never goes beyond what the demonstrations did, under the
policy or under the leader.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from aloe.errors import bad, require

TASK = "robot"


@dataclass(frozen=True)
class ActionUnits:
    """The affine map between a robot's action units and aloe's [-1, 1], per action value:
    `low` -> -1 and `high` -> +1, clipped to that range both ways. A degenerate value
    (low == high: a joint the demonstrations never moved) maps to 0 and back to `low`: the
    policy holds it where the demonstrations did."""

    low: np.ndarray  # (A,) float64, the robot's units
    high: np.ndarray  # (A,)

    @classmethod
    def of(cls, low: Sequence[float], high: Sequence[float]) -> ActionUnits:
        lo, hi = (np.asarray(v, np.float64).reshape(-1) for v in (low, high))
        if lo.shape != hi.shape or not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            raise ValueError(f"action ranges {lo.tolist()}..{hi.tolist()}: not finite pairs")
        if (lo > hi).any():
            raise ValueError(f"action ranges {lo.tolist()}..{hi.tolist()}: a low above its high")
        return cls(lo, hi)

    @classmethod
    def identity(cls, dim: int) -> ActionUnits:
        """The units of a simulator: aloe's own."""
        return cls(np.full(dim, -1.0), np.full(dim, 1.0))

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any], dim: int) -> ActionUnits:
        """The ranges `aloe serve` sends (`metadata`), or aloe's own where it sends none."""
        sent = meta.get("action_units")
        if sent is None:
            return cls.identity(dim)
        return cls.of(sent["low"], sent["high"])

    def metadata(self) -> dict[str, list[float]]:
        return {"low": self.low.tolist(), "high": self.high.tolist()}

    @property
    def span(self) -> np.ndarray:
        return self.high - self.low

    def to_unit(self, values: Any) -> np.ndarray:
        """Actions in the robot's units (..., A) as aloe's, in [-1, 1], float32."""
        x = np.asarray(values, np.float64)
        moving = self.span > 0
        scaled = 2.0 * (x - self.low) / np.where(moving, self.span, 1.0) - 1.0
        return np.clip(np.where(moving, scaled, 0.0), -1.0, 1.0).astype(np.float32)

    def to_robot(self, action: Any) -> np.ndarray:
        """aloe's actions (..., A), clipped to [-1, 1], in the robot's units (float64)."""
        a = np.clip(np.asarray(action, np.float64), -1.0, 1.0)
        return self.low + (a + 1.0) / 2.0 * self.span


@dataclass
class RobotSpec:
    """A robot run's sizes, read from its `--demos` dataset when the run starts (never set
    by hand; `aloe.run_robot.robot_run`). Empty in any other run."""

    state_dim: int = 0
    """The width of the robot's state (the dataset's state feature)."""
    action_dim: int = 0
    """The width of an action (the dataset's action feature)."""
    fps: float = 0.0
    """The dataset's frame rate: the robot's control rate."""
    instruction: str = ""
    """The instruction the policy is given (the dataset's most frequent task string)."""
    action_low: tuple[float, ...] = ()
    """Per action value, the robot's units that aloe's -1 stands for (the dataset's min)."""
    action_high: tuple[float, ...] = ()
    """... and +1 (the dataset's max); `ActionUnits` maps between them."""

    @property
    def empty(self) -> bool:
        return self.action_dim == 0

    def units(self, action_dim: int = 0) -> ActionUnits:
        """The robot's action units; an empty spec's (a simulator's run): aloe's own, for
        `action_dim` values."""
        if self.empty:
            return ActionUnits.identity(action_dim)
        return ActionUnits.of(self.action_low, self.action_high)

    def validate(self, task: str, prefix: str = "") -> None:
        """The spec as `aloe.run_robot.robot_run` writes it: empty unless the task is `robot`;
        sizes >= 1, a rate > 0, one range per action value, low <= high."""
        name = f"{prefix}env.robot"
        shown = f"state {self.state_dim}, action {self.action_dim}"
        if self.empty:
            whole = self.state_dim == 0 and not self.action_low and not self.action_high
            require(whole, name, shown, "must be all set or empty")
            return
        require(task == TASK, name, shown, f"must be empty unless --task {TASK}")
        require(self.state_dim >= 1, name, shown, "sizes must be >= 1")
        require(math.isfinite(self.fps) and self.fps > 0, f"{name}.fps", self.fps, "must be > 0")
        ranges = (len(self.action_low), len(self.action_high))
        require(
            ranges == (self.action_dim, self.action_dim),
            f"{name}.action_low/high",
            ranges,
            f"must hold one range per action value ({self.action_dim})",
        )
        try:
            self.units()
        except ValueError as e:
            raise bad(f"{name}.action_low/high", allowed=str(e)) from None

"""Failure detectors in the paper's spirit (Section V-A: early termination on irrecoverable states).

Each detector looks at the 39-dim MetaWorld state (hand xyz, gripper, first object xyz+quat,
..., goal xyz) and MetaWorld's dense task reward as a progress signal, and returns a reason
string when the episode has failed. They are stateful per episode: call `reset` first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HAND = slice(0, 3)
OBJ = slice(4, 7)
GOAL = slice(36, 39)


@dataclass
class FailureConfig:
    """Thresholds of the failure detectors (metres; steps at 80 Hz)."""

    irrecoverable: bool = True
    """Detect irrecoverable states: object off the table, out of the workspace, dropped far."""
    table_z: float = -0.05
    """The object below this height has fallen off the table (the table top is at z = 0)."""
    workspace_x: tuple[float, float] = (-0.6, 0.6)
    """Allowed x range of the object."""
    workspace_y: tuple[float, float] = (0.25, 1.05)
    """Allowed y range of the object."""
    lift_height: float = 0.05
    """An object raised this far above its start height counts as lifted."""
    drop_goal_distance: float = 0.15
    """A lifted object back on the table farther than this from the goal has been dropped."""
    stall_steps: int = 200
    """Fail after this many steps without task progress; 0 disables the stall detector."""
    stall_min_gain: float = 0.05
    """Progress (MetaWorld's dense reward, 0..10) must beat its best by this much to count."""


class FailureDetector:
    def __init__(self, cfg: FailureConfig) -> None:
        self.cfg = cfg
        self.reset(np.zeros(39))

    def reset(self, state: np.ndarray) -> None:
        self.start_z = float(state[OBJ][2])
        self.lifted = False
        self.reset_progress()

    def reset_progress(self) -> None:
        """A new actor takes over: judge stalls from here, not from the previous actor's best."""
        self.best_progress = -np.inf
        self.steps_since_progress = 0

    def __call__(self, state: np.ndarray, progress: float) -> str | None:
        """Return why the episode failed at `state`, or None."""
        if progress > self.best_progress + self.cfg.stall_min_gain:
            self.best_progress = progress
            self.steps_since_progress = 0
        else:
            self.steps_since_progress += 1
        if self.cfg.irrecoverable:
            reason = self._irrecoverable(state)
            if reason:
                return reason
        if self.cfg.stall_steps and self.steps_since_progress >= self.cfg.stall_steps:
            return f"stall: no task progress for {self.cfg.stall_steps} steps"
        return None

    def _irrecoverable(self, state: np.ndarray) -> str | None:
        cfg = self.cfg
        obj, goal, hand = state[OBJ], state[GOAL], state[HAND]
        if obj[2] < cfg.table_z:
            return "object fell off the table"
        if not (cfg.workspace_x[0] <= obj[0] <= cfg.workspace_x[1]) or not (
            cfg.workspace_y[0] <= obj[1] <= cfg.workspace_y[1]
        ):
            return "object left the workspace"
        if obj[2] > self.start_z + cfg.lift_height:
            self.lifted = True
        elif (
            self.lifted
            and obj[2] < self.start_z + 0.01
            and np.linalg.norm(obj - goal) > cfg.drop_goal_distance
            and np.linalg.norm(hand - obj) > 0.05
        ):
            return "object dropped far from the goal"
        return None

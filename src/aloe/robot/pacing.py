"""The robot's control clock: steps on deadlines at a fixed rate, as a real robot's loop runs.

`Deadlines` ends control step k at t0 + k / hz (t0: the episode's reset), sleeping only what
is left of the period after the step's own work (the action sent, a chunk computed, the
observation read). A step that overruns its deadline is not caught up by rushing the next
ones, which would jerk the arm: the schedule restarts from now and the overrun is counted.
`Paced` runs a simulator at a robot's rate with it; `aloe.robot.lerobot_env.LeRobotEnv`
keeps a LeRobot robot's.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from aloe.envs.base import EpisodeEnv


class Deadlines:
    """The control schedule at `hz` steps per second (see the module docstring)."""

    def __init__(self, hz: float) -> None:
        self.period = 1.0 / hz
        self.overruns = 0  # steps that ended after their deadline
        self.late_s = 0.0  # the most any of them was late
        self._due: float | None = None

    def restart(self) -> None:
        """The schedule starts now (at a reset): the first step ends a period from here."""
        self._due = time.perf_counter() + self.period

    def wait(self) -> None:
        """Sleep until this step's deadline; the next step's is a period later."""
        now = time.perf_counter()
        if self._due is None:
            self._due = now + self.period
        late = now - self._due
        if late <= 0:
            time.sleep(-late)
            self._due += self.period
            return
        self.overruns += 1
        self.late_s = max(self.late_s, late)
        self._due = now + self.period


class Paced:
    """An environment whose steps end on the deadlines of a `hz` control clock, as a robot's
    do: the observation after an action comes a control period after the last one, so a
    chunk computed in between is time the robot stands still (`Played.idle_s`)."""

    def __init__(self, env: EpisodeEnv, hz: float) -> None:
        object.__setattr__(self, "_env", env)
        object.__setattr__(self, "clock", Deadlines(hz))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._env, name, value)

    def reset(self, *, seed: int) -> Any:
        out = self._env.reset(seed=seed)
        self.clock.restart()
        return out

    def step(self, action: np.ndarray) -> Any:
        out = self._env.step(action)
        self.clock.wait()
        return out

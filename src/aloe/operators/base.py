"""The operator: the paper's human in the loop (Appendix B).

Collection talks to an operator through this interface only, so a real teleoperator (a VR
rig, a spacemouse) plugs into the same place as the simulated one.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class Operator(Protocol):
    def reset(self, seed: int) -> None:
        """A new episode starts; forget what was watched and reseed any randomness."""

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        """The operator's action for this observation (teleoperation or a demonstration)."""

    def start_watching(self) -> None:
        """The policy takes (back) control: start judging its progress afresh."""

    def watch(self, obs: dict[str, Any], info: dict[str, Any]) -> str | None:
        """Called after every policy step: the reason to take over now, or None."""

    def take_over(self, reason: str, history: list[dict[str, Any]]) -> int:
        """The operator takes control; returns where to put the robot back before correcting,
        as an index into `history`.

        `history` holds the simulator snapshots of the policy fragment, oldest first; the
        last one is the failure state. A real operator resets the scene by hand instead.
        """

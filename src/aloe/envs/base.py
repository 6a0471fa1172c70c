"""What the rollout engine needs from a task backend (`aloe.rollout`).

MetaWorld's `TaskEnv` implements it now; a robot behind a policy server and an OGBench
task implement the same members next. Nothing here imports from above `envs/`.

An observation is a dict with at least `state` (float32 (S,)) and `instruction` (str), and
`images` (camera name -> uint8 (H, W, 3)) when the backend has cameras. A step's `info`
carries `success` (bool), `failure_reason` ("" unless the episode failed) and `progress`
(the task's dense progress signal, which the operator's watch reads).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

Obs = dict[str, Any]
Info = dict[str, Any]


class EpisodeEnv(Protocol):
    """One task, run as the paper's episodic MDP (Eq. 14 rewards, labelled failures)."""

    task: str  # the current task's name (a multi-task env selects it at reset)
    instruction: str  # its natural-language instruction
    steps: int  # steps since the reset
    limit: int  # the step count at which the acting party's time runs out (truncation)
    control_period: float  # seconds per step (1 / the control rate)

    @property
    def max_steps(self) -> int:
        """The policy's time limit per episode, in steps."""
        ...

    def reset(self, *, seed: int) -> tuple[Obs, Info]:
        """A new episode; everything about it (initial state, task) follows from `seed`."""
        ...

    def step(self, action: np.ndarray) -> tuple[Obs, float, bool, bool, Info]:
        """(next obs, Eq. 14 reward, terminated, truncated, info) for an action in [-1, 1]."""
        ...

    def reward(self, *, success: bool, failed: bool) -> float:
        """Eq. 14: 0 at a successful end, −C_fail at a failed end, −1 otherwise."""
        ...

    def reset_progress(self) -> None:
        """A new actor takes over: judge a lack of progress from here on."""
        ...

    def hand_to(self, actor: str) -> None:
        """`actor` ("policy" or "operator") acts from the next step on: action-level failure
        events judge the policy's actions only (a reset hands control to the policy)."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """Everything needed to put the world back exactly here."""
        ...

    def restore(self, snap: dict[str, Any]) -> Obs:
        """Put the world back to `snap`; the observation there."""
        ...

    def sim_state(self) -> np.ndarray:
        """The simulator's state vector alone (what the store keeps per step)."""
        ...

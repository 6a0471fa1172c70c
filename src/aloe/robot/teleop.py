"""Teleoperation: the person watching a real robot, behind the rollout's `Operator` interface.

A `Teleop` is what a device gives: poll it after every policy step for a takeover (`watch`,
the reason, or None), and read the operator's action while they are in control (`act`).
Every simulated operator (`aloe.operators`) is one: `Operator` has both methods, so the
scripted and human-like profiles drive the robot client unchanged. `as_operator` completes a
device into an `Operator` for `aloe.rollout.play_episode`: a real operator corrects from
where the robot stands (no rewind) and gives control back by the collection rule
(`Takeover.handback_steps`), as the simulated ones do.

`KeyboardTeleop` is a documented implementation for real use, on a terminal:

    space      take over (again: the takeover's reason is "operator takeover")
    w / s      +x / −x        a / d   +y / −y        r / f   +z / −z
    g          toggle the gripper (closed = +1, open = −1)

Each key press moves the end effector by `speed` (in action units, [-1, 1]) for one step.
For a gamepad, implement the same two methods over its axes (e.g. `inputs` or `pygame`).
"""

from __future__ import annotations

import os
import select
import sys
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from aloe.operators.base import Operator


class Rerecord(Exception):
    """The person drops the episode being played (a re-record key): `RobotClient.episode`
    discards it on the server, and `aloe robot` plays its seed again."""


@runtime_checkable
class Teleop(Protocol):
    """A person with a device, watching the policy and taking over."""

    def watch(self, obs: dict[str, Any], info: dict[str, Any]) -> str | None:
        """Polled after every policy step: the reason to take over now, or None."""

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        """The operator's action while in control."""


class TeleopOperator:
    """A `Teleop` device as an `Operator`: no rewind (a real scene is not restored)."""

    def __init__(self, teleop: Teleop) -> None:
        self.teleop = teleop

    def reset(self, seed: int) -> None:
        reset = getattr(self.teleop, "reset", None)
        if reset is not None:
            reset(seed)

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        return np.asarray(self.teleop.act(obs), dtype=np.float32)

    def start_watching(self) -> None:
        pass

    def watch(self, obs: dict[str, Any], info: dict[str, Any]) -> str | None:
        return self.teleop.watch(obs, info)

    def take_over(self, reason: str, history: list[dict[str, Any]]) -> int:
        return len(history) - 1  # from where the robot stands


def as_operator(teleop: Teleop | Operator) -> Operator:
    """`teleop` as the rollout's operator: a simulated operator as it is, a device wrapped."""
    if all(callable(getattr(teleop, m, None)) for m in ("reset", "start_watching", "take_over")):
        return teleop  # type: ignore[return-value]
    return TeleopOperator(teleop)


KEYS = {"w": (0, 1.0), "s": (0, -1.0), "a": (1, 1.0), "d": (1, -1.0), "r": (2, 1.0), "f": (2, -1.0)}


class KeyboardTeleop:
    """Key presses as end-effector deltas (see the module docstring); `read_keys` returns the
    keys pressed since the last call (the default reads a raw terminal without blocking)."""

    def __init__(self, speed: float = 0.5, read_keys: Callable[[], str] | None = None) -> None:
        self.speed = speed
        self.read_keys = read_keys or terminal_keys
        self.gripper = -1.0
        self.engaged = False
        self._pending = ""

    def reset(self, seed: int) -> None:
        self.gripper = -1.0
        self.engaged = False
        self._pending = ""

    def _keys(self) -> str:
        keys, self._pending = self._pending + self.read_keys(), ""
        return keys

    def watch(self, obs: dict[str, Any], info: dict[str, Any]) -> str | None:
        keys = self._keys()
        if " " in keys:
            self.engaged = True
            self._pending = keys.split(" ", 1)[1]  # what followed the takeover moves the arm
            return "operator takeover"
        return None

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        action = np.zeros(4, dtype=np.float32)
        for key in self._keys():
            if key in KEYS:
                axis, sign = KEYS[key]
                action[axis] = np.clip(action[axis] + sign * self.speed, -1.0, 1.0)
            elif key == "g":
                self.gripper = -self.gripper
        action[3] = self.gripper
        return action


def terminal_keys() -> str:
    """The characters typed on stdin since the last call, without waiting (a POSIX terminal
    in cbreak mode; the caller sets it with `tty.setcbreak(sys.stdin)` and restores it)."""
    out = ""
    while select.select([sys.stdin], [], [], 0)[0]:
        ch = os.read(sys.stdin.fileno(), 1).decode(errors="ignore")
        if not ch:
            break
        out += ch
    return out

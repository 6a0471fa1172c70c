"""Robustness: disturbances injected while the policy acts (Fig. 5, right; Appendix E).

A `Perturbation` fires in bursts on a `Schedule` (first burst at `start`, one every `every`
steps, each `duration` steps long; step t counts from the reset). Kinds:

- action_noise: Gaussian noise of std `strength` added to the policy's actions (then
  clipped to [-1, 1]): the robot does not do what it was told.
- push: a horizontal force of `strength` m/s² × the object's mass on the object's root body
  (`data.xfrc_applied`) for the burst, in a random direction drawn per burst.
- kick: a horizontal velocity of `strength` m/s added to the object's free joint at the
  start of each burst, in a random direction drawn per burst.

Directions and noise come from a generator seeded by (perturbation seed, episode seed), so
a perturbed episode is reproducible, and steps before the first burst match the
unperturbed episode exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import mujoco
import numpy as np

from aloe.envs.metaworld import TaskEnv
from aloe.envs.metaworld_variants import object_body, subtree

Kind = Literal["action_noise", "push", "kick"]


@dataclass(frozen=True)
class Schedule:
    """When bursts happen (steps since the reset)."""

    start: int = 20
    """Step of the first burst (the hand is usually near the object by then)."""
    every: int = 40
    """Steps from one burst's start to the next; 0 = a single burst."""
    duration: int = 5
    """Steps per burst."""

    def burst(self, t: int) -> int | None:
        """Index of the burst active at step t, or None."""
        if t < self.start:
            return None
        k, offset = (0, t - self.start) if not self.every else divmod(t - self.start, self.every)
        return k if offset < self.duration else None


@dataclass(frozen=True)
class Perturbation:
    """A kind of disturbance, its strength and schedule."""

    name: str
    kind: Kind
    strength: float
    schedule: Schedule = field(default_factory=Schedule)
    seed: int = 0

    @property
    def description(self) -> str:
        s = self.schedule
        unit = {"action_noise": "std", "push": "m/s² x object mass", "kick": "m/s"}[self.kind]
        when = f"from step {s.start}" + (f", every {s.every}" if s.every else ", once")
        return f"{self.kind} {self.strength:g} {unit}, {s.duration}-step bursts {when}"


def default_perturbations() -> list[Perturbation]:
    """The suite's defaults: each fires every 40 steps from step 20 (see module docstring)."""
    return [
        Perturbation("action-noise", "action_noise", 0.5, Schedule(20, 40, 10)),
        Perturbation("push", "push", 20.0, Schedule(20, 40, 5)),
        Perturbation("kick", "kick", 0.5, Schedule(20, 40, 1)),
    ]


class Perturber:
    """A `StepHook` that applies one perturbation during one episode."""

    def __init__(self, env: TaskEnv, p: Perturbation, episode_seed: int) -> None:
        self.p = p
        self.rng = np.random.default_rng([p.seed, episode_seed])
        model = env.raw.model
        self.body = object_body(env) if p.kind != "action_noise" else -1
        self.mass = float(model.body_mass[subtree(model, self.body)].sum()) if self.body >= 0 else 0
        self.direction = np.zeros(3)
        self.current: int | None = None

    def before_step(self, env: TaskEnv, t: int, action: np.ndarray) -> np.ndarray:
        k = self.p.schedule.burst(t)
        if k is None:
            return action
        if k != self.current:  # a new burst
            self.current = k
            angle = self.rng.uniform(0.0, 2 * np.pi)
            self.direction = np.array([np.cos(angle), np.sin(angle), 0.0])
            if self.p.kind == "kick":
                _add_velocity(env, self.body, self.p.strength * self.direction)
        if self.p.kind == "action_noise":
            noise = self.p.strength * self.rng.standard_normal(np.shape(action))
            return np.clip(action + noise, -1.0, 1.0).astype(np.float32)
        if self.p.kind == "push":
            env.raw.data.xfrc_applied[self.body, :3] = self.mass * self.p.strength * self.direction
        return action

    def after_step(self, env: TaskEnv, t: int) -> None:
        if self.p.kind == "push" and self.p.schedule.burst(t + 1) != self.current:
            env.raw.data.xfrc_applied[self.body] = 0.0

    def finish(self, env: TaskEnv) -> None:
        """Remove a push still applied when the episode ended (resets keep xfrc_applied)."""
        if self.body >= 0:
            env.raw.data.xfrc_applied[self.body] = 0.0


def _add_velocity(env: TaskEnv, body: int, velocity: np.ndarray) -> None:
    model = env.raw.model
    for j in range(model.njnt):
        if model.jnt_bodyid[j] == body and model.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE:
            adr = model.jnt_dofadr[j]
            env.raw.data.qvel[adr : adr + 3] += velocity
            return
    raise ValueError(f"{env.task}: the object's root body has no free joint to kick")

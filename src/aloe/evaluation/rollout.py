"""Operator-free rollouts for evaluation, of one env or a batch of envs in lockstep.

Both run `aloe.rollout`'s policy fragment with its rules (hooks around each step, the
watcher's alarm labelled a failure), recording a light `Trajectory` instead of the store's
columns. `rollout` runs a `ChunkPolicy` from a seeded reset exactly as `collect.evaluate`
does (same seeds, same outcomes), so the suite's nominal numbers are `aloe eval`'s. `play`
continues a batch of envs from wherever their simulators stand (restored states, for
ground-truth returns): each env first executes its `prefix` (the chunk under evaluation),
then the policy's chunks; chunks for all envs that need one are sampled in one batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from aloe.envs.base import EpisodeEnv
from aloe.policies.base import ChunkPolicy
from aloe.rollout import (
    PolicyFragment,
    Step,
    StepHook,
    Stepper,
    Watcher,
    lockstep,
    play_episode,
)


class BatchPolicy(Protocol):
    exec_horizon: int

    def act_chunks(self, states: np.ndarray) -> np.ndarray:
        """Action chunks (B, h, A) in [-1, 1] for states (B, S)."""


class SerialPolicy:
    """A one-observation `ChunkPolicy` as a `BatchPolicy` (a loop over the batch)."""

    def __init__(self, policy: ChunkPolicy) -> None:
        self.policy = policy
        self.exec_horizon = policy.exec_horizon

    def act_chunks(self, states: np.ndarray) -> np.ndarray:
        return np.stack([self.policy.act_chunk({"state": s}) for s in states])


class ActorBatchPolicy:
    """An actor with `sample(state, task_index, n, generator)` (a `FlowPolicy`), batched."""

    def __init__(self, actor: Any, exec_horizon: int, device: torch.device, seed: int = 0) -> None:
        self.actor = actor
        self.exec_horizon = exec_horizon
        self.device = device
        self.generator = torch.Generator(device=device)
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        self.generator.manual_seed(int(seed) % 2**63)

    def act_chunks(self, states: np.ndarray) -> np.ndarray:
        s = torch.as_tensor(np.asarray(states), dtype=torch.float32, device=self.device)
        tasks = torch.zeros(len(s), dtype=torch.long, device=self.device)
        return self.actor.sample(s, tasks, 1, self.generator)[:, 0].cpu().numpy()


@dataclass
class Trajectory:
    """One rollout: T steps from s_0, with Eq. 14 rewards and how it ended (a `Recorder`)."""

    states: list[np.ndarray]  # s_0 .. s_T, (S,) each; [] = s_0 comes with the first step
    actions: list[np.ndarray] = field(default_factory=list)  # executed (after any hook)
    rewards: list[float] = field(default_factory=list)
    chunk_starts: list[int] = field(default_factory=list)  # steps where a chunk began
    success: bool = False
    failure_reason: str = ""  # "" on success or truncation
    truncated: bool = False
    record_sim_state: bool = False

    def __len__(self) -> int:
        return len(self.actions)

    def add(self, step: Step) -> None:
        if not self.states:
            self.states.append(step.obs["state"])
        if step.chunk_start:
            self.chunk_starts.append(len(self))
        self.states.append(step.next_obs["state"])
        self.actions.append(np.clip(np.asarray(step.action, dtype=np.float32), -1.0, 1.0))
        self.rewards.append(float(step.reward))

    def relabel_end(self, *, reward: float, done: bool, truncated: bool, reason: str) -> None:
        self.rewards[-1] = float(reward)

    def finish(self, success: bool, failure_reason: str, truncated: bool) -> Trajectory:
        self.success = success
        self.failure_reason = failure_reason
        self.truncated = truncated
        return self

    def discounted_return(self, gamma: float) -> float:
        """Σ_k γ^k r_k over the rollout (no bootstrap: rollouts run to their end)."""
        r = np.asarray(self.rewards, dtype=np.float64)
        return float(np.sum(r * gamma ** np.arange(len(r))))


def play(
    envs: Sequence[EpisodeEnv],
    states: Sequence[np.ndarray],
    policy: BatchPolicy,
    *,
    prefixes: Sequence[np.ndarray] | None = None,
    hooks: Sequence[StepHook | None] | None = None,
    watchers: Sequence[Watcher | None] | None = None,
) -> list[Trajectory]:
    """Run every env from its current simulator state (observed as `states`) to its end.

    A watcher that raises an alarm ends the rollout as collection ends a policy fragment at
    a takeover: a failure labelled `takeover: ...` with reward −C_fail (Section IV-A).
    Watchers are used as given: the caller starts them (or restores their counters).
    """
    trajs = [Trajectory(states=[np.asarray(s, dtype=np.float32)]) for s in states]
    parts = []
    for i, (env, traj) in enumerate(zip(envs, trajs, strict=True)):
        step = Stepper(env, traj, hooks[i] if hooks else None)
        watcher = watchers[i] if watchers else None
        part = PolicyFragment(step, {"state": traj.states[0]}, version=0, watcher=watcher)
        if prefixes is not None and len(prefixes[i]):
            part.give(list(prefixes[i]))
        parts.append(part)
    lockstep(
        parts,
        lambda need: policy.act_chunks(np.stack([p.obs["state"] for p in need])),
        policy.exec_horizon,
    )
    return [t.finish(p.success, p.reason, p.truncated) for t, p in zip(trajs, parts, strict=True)]


def rollout(
    env: EpisodeEnv, policy: ChunkPolicy, seed: int, *, hook: StepHook | None = None
) -> Trajectory:
    """One operator-free episode from the seeded reset (as `collect.evaluate` runs it)."""
    traj = Trajectory(states=[])
    counts = play_episode(env, seed, policy=policy, recorder=traj, hook=hook)
    return traj.finish(counts.success, counts.failure_reason, counts.truncated)

"""Operator-free rollouts with per-step hooks, for one env or a batch of envs in lockstep.

`rollout` runs a `ChunkPolicy` from a seeded reset exactly as `collect.evaluate` does (same
seeds, same outcomes), so the suite's nominal numbers are `aloe eval`'s. `play` continues a
batch of envs from wherever their simulators stand (restored states, for ground-truth
returns): each env first executes its `prefix` (the chunk under evaluation), then the
policy's chunks; chunks for all envs that need one are sampled in one batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from aloe.collect import ChunkPolicy
from aloe.envs.metaworld import TaskEnv


class BatchPolicy(Protocol):
    exec_horizon: int

    def act_chunks(self, states: np.ndarray) -> np.ndarray:
        """Action chunks (B, h, A) in [-1, 1] for states (B, S)."""


class StepHook(Protocol):
    """Something done to the world around each step (a perturbation)."""

    def before_step(self, env: TaskEnv, t: int, action: np.ndarray) -> np.ndarray:
        """Called before step t of the rollout; returns the action to execute."""

    def after_step(self, env: TaskEnv, t: int) -> None:
        """Called after step t."""


class Watcher(Protocol):
    """The operator's failure judgement without its hands (`Operator.watch`)."""

    def start_watching(self) -> None: ...

    def watch(self, obs: dict[str, Any], info: dict[str, Any]) -> str | None: ...


class SerialPolicy:
    """A one-observation `ChunkPolicy` as a `BatchPolicy` (a loop over the batch)."""

    def __init__(self, policy: ChunkPolicy) -> None:
        self.policy, self.exec_horizon = policy, policy.exec_horizon

    def act_chunks(self, states: np.ndarray) -> np.ndarray:
        return np.stack([self.policy.act_chunk({"state": s}) for s in states])


class ActorBatchPolicy:
    """An actor with `sample(state, task_index, n, generator)` (a `FlowPolicy`), batched."""

    def __init__(self, actor: Any, exec_horizon: int, device: torch.device, seed: int = 0) -> None:
        self.actor, self.exec_horizon, self.device = actor, exec_horizon, device
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
    """One rollout: T steps from s_0, with Eq. 14 rewards and how it ended."""

    states: list[np.ndarray]  # s_0 .. s_T, (S,) each
    actions: list[np.ndarray] = field(default_factory=list)  # executed (after any hook)
    rewards: list[float] = field(default_factory=list)
    chunk_starts: list[int] = field(default_factory=list)  # steps where a chunk began
    success: bool = False
    failure_reason: str = ""  # "" on success or truncation
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def ended(self) -> bool:
        return self.success or bool(self.failure_reason) or self.truncated

    def discounted_return(self, gamma: float) -> float:
        """Σ_k γ^k r_k over the rollout (no bootstrap: rollouts run to their end)."""
        r = np.asarray(self.rewards, dtype=np.float64)
        return float(np.sum(r * gamma ** np.arange(len(r))))


def play(
    envs: Sequence[TaskEnv],
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
    n = len(envs)
    trajs = [Trajectory(states=[np.asarray(s, dtype=np.float32)]) for s in states]
    queues = [list(p) for p in prefixes] if prefixes is not None else [[] for _ in range(n)]
    for i, traj in enumerate(trajs):
        if queues[i]:
            traj.chunk_starts.append(0)
    alive = list(range(n))
    while alive:
        need = [i for i in alive if not queues[i]]
        if need:
            chunks = policy.act_chunks(np.stack([trajs[i].states[-1] for i in need]))
            for i, chunk in zip(need, chunks, strict=True):
                queues[i] = list(chunk[: policy.exec_horizon])
                trajs[i].chunk_starts.append(len(trajs[i]))
        for i in alive:
            hook = hooks[i] if hooks else None
            watcher = watchers[i] if watchers else None
            _advance(envs[i], trajs[i], queues[i].pop(0), hook, watcher)
        alive = [i for i in alive if not trajs[i].ended]
    return trajs


def _advance(
    env: TaskEnv, traj: Trajectory, action: np.ndarray, hook: StepHook | None,
    watcher: Watcher | None,
) -> None:  # fmt: skip
    t = len(traj)
    if hook is not None:
        action = hook.before_step(env, t, action)
    obs, reward, term, trunc, info = env.step(action)
    if hook is not None:
        hook.after_step(env, t)
    reason = info["failure_reason"]
    if watcher is not None and not (term or trunc):
        alarm = watcher.watch(obs, info)
        if alarm:
            reason, reward = f"takeover: {alarm}", env.reward(success=False, failed=True)
    traj.states.append(obs["state"])
    traj.actions.append(np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0))
    traj.rewards.append(float(reward))
    traj.success, traj.failure_reason = bool(info["success"]), reason
    traj.truncated = bool(trunc) and not reason


def rollout(
    env: TaskEnv, policy: ChunkPolicy, seed: int, *, hook: StepHook | None = None
) -> Trajectory:
    """One operator-free episode from the seeded reset (as `collect.evaluate` runs it)."""
    obs, _ = env.reset(seed=seed)
    policy.reset(seed)
    return play([env], [obs["state"]], SerialPolicy(policy), hooks=[hook])[0]

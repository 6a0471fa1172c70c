"""What an algorithm is handed by the trainer: narrow contexts, never the trainer itself.

    RunConfig       the run's fields every algorithm may read (`aloe.config.TrainConfig`
                    has them): sizes, seed, the shared `optim.*`, the critic's shape
    LearnerParts    what every learner is built from (the actor, sizes, a state normaliser)
    UpdateContext   one iteration's update: config, the buffer's frames, the learner, a
                    sampler factory and `steps`, the loop of update steps
    CollectContext  an algorithm's own collection (PPO+SBC's rollouts): where episodes go

Each context also carries `settings`, the algorithm's own config (its table row's
`config`, e.g. `AloeConfig`), so that an algorithm reads its own settings and the shared
ones, and never another algorithm's. The trainer (aloe.train) builds them; the algorithms
(aloe.algos.*) read them. Nothing here imports either, nor the run's config.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import numpy as np
import torch

from aloe.data import ChunkBatch, Frames
from aloe.datasets.sampler import ChunkSampler
from aloe.progress import Phase
from aloe.shard import step_on_shard

if TYPE_CHECKING:
    from aloe.algos.optimised import OptimConfig
    from aloe.collect import CollectConfig
    from aloe.critics.chunked_q import CriticConfig, QEnsemble
    from aloe.datasets.store import EpisodeStore
    from aloe.envs.base import EpisodeEnv
    from aloe.envs.metaworld import EnvConfig
    from aloe.nn import Normalizer
    from aloe.observation import Observations
    from aloe.policies.base import Actor
    from aloe.progress import Progress

StepFn = Callable[[ChunkBatch], dict[str, float]]  # one update on one batch -> its metrics
S = TypeVar("S")  # an algorithm's own settings (`AloeConfig`, ...; None for BC)


class RunConfig(Protocol):
    """The fields of a run's config that any algorithm reads besides its own `settings`."""

    algo: str
    task: str
    seed: int
    horizon: int
    exec_horizon: int
    progress: Progress
    optim: OptimConfig
    critic: CriticConfig
    env: EnvConfig
    collect: CollectConfig

    def clock_limit(self) -> int | None:
        """The episode clock's divisor where the critic reads the clock, else None."""
        ...


class Learner(Protocol):
    """What the trainer, `aloe.load_run` and evaluation need of any algorithm's learner."""

    actor: Any  # the `Actor` that is evaluated and checkpointed

    @property
    def critic(self) -> QEnsemble:
        """Its value network: a chunked Q ensemble, or a V(s) (K = 1)."""
        ...

    device: torch.device
    generator: torch.Generator  # all of an update's randomness; reseeded per iteration

    def bc_step(self, batch: ChunkBatch) -> dict[str, float]:
        """One behaviour-cloning update of the actor (the warm start, Eq. 16)."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


L = TypeVar("L")


@dataclass(frozen=True)
class LearnerParts(Generic[S]):
    """What every learner is built from (`aloe.run.build_learner` assembles it)."""

    cfg: RunConfig
    settings: S
    """The algorithm's own config."""
    actor: Actor
    """The compact `FlowPolicy` or the LeRobot adapter: algorithms use the protocol only."""
    state_dim: int
    action_dim: int
    num_tasks: int
    normalizer: Callable[[], Normalizer]
    """A fresh state normaliser from the data's statistics (one per network)."""
    tokens: dict[str, Any]
    """The observation layout and instruction features every network takes."""
    device: torch.device
    c_fail: float | None = None
    """C_fail of Eq. 14 in the run's environment (HL-Gauss bins); None when a checkpoint
    will be loaded over the learner."""


@dataclass(frozen=True)
class UpdateContext(Generic[S]):
    """One iteration's update, after collection and before evaluation."""

    cfg: RunConfig
    settings: S
    """The algorithm's own config."""
    iteration: int
    frames: Frames
    """The whole buffer D_k (every episode so far), as `Trainer.frames` reads it."""
    learner: Learner
    sampler: Callable[[Frames], ChunkSampler]
    """A chunk sampler over (a selection of) the frames, seeded for this iteration."""
    env_steps: int = 0
    """Environment steps collected in this iteration (`aloe.critic_updates_per_step`)."""

    def steps(
        self, n: int, step: StepFn, sampler: ChunkSampler, desc: str
    ) -> list[dict[str, float]]:
        """n update steps, each on a fresh batch of optim.batch_size chunks (a `Phase`); on
        several learner processes each trains on its shard (aloe.shard)."""
        phase = Phase(desc, n, self.cfg.progress, unit="step")
        step = step_on_shard(step)
        batch = self.cfg.optim.batch_size
        return [step(sampler.sample(batch)) for _ in phase.iterate(range(n))]

    def learner_as(self, kind: type[L]) -> L:
        """The learner, checked to be the algorithm's own kind."""
        return _checked(self.learner, kind, self.cfg.algo)


@dataclass(frozen=True)
class CollectContext(Generic[S]):
    """An algorithm's own collection for one iteration (instead of the operator loop)."""

    cfg: RunConfig
    settings: S
    """The algorithm's own config."""
    iteration: int
    learner: Learner
    env: EpisodeEnv
    store: EpisodeStore
    """Where the episodes go (an interrupted iteration's episodes are already there)."""
    obs: Observations
    """What the policy sees of an environment observation."""

    def learner_as(self, kind: type[L]) -> L:
        """The learner, checked to be the algorithm's own kind."""
        return _checked(self.learner, kind, self.cfg.algo)


def _checked(learner: Learner, kind: type[L], algo: str) -> L:
    if not isinstance(learner, kind):
        raise TypeError(f"algo {algo} needs a {kind.__name__}, got {type(learner).__name__}")
    return learner


def mean_metric(steps: list[dict[str, float]], key: str) -> float:
    """The mean of one metric over an iteration's steps (NaN when there were none)."""
    return float(np.mean([s[key] for s in steps])) if steps else math.nan


def step_means(steps: list[dict[str, float]], columns: Mapping[str, str]) -> dict[str, float]:
    """metrics.jsonl column -> the mean of the learner metric it names, over the steps."""
    return {column: mean_metric(steps, key) for column, key in columns.items()}

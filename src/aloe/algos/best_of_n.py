"""Best-of-N acting (`AloeConfig.best_of_n`; Q-chunking's best-of-N sampling, beyond the
paper): at every decision, N chunks of π sampled in one batch, the one the run's critic
ranks highest executed (`aloe_math.sample_best`).

`BestOfNPolicy` wraps the run's `FlowChunkPolicy` (composition, as `ExploringPolicy` does)
wherever an ALOE run acts: the trainer's collection and evaluation, `aloe eval` and the
suite (`aloe.run.Run.acting_policy`), and `aloe serve` (`aloe.serve.policy`). Its noise is
the wrapped policy's, reseeded per episode, so that an episode still depends on its seed
alone (resume), and N = 1 draws exactly the plain policy's chunk.

A critic with `critic.time_features` reads the episode clock (`aloe.data.episode_clock`):
policy steps taken, and steps since the fragment began. The wrapper counts them itself,
`exec_horizon` steps per chunk, which is exact wherever the policy acts from the start of
an episode until its fragment ends: evaluation, and collection whose operator completes the
task after a takeover. A hand-back (`collect.handback_steps > 0`) starts a policy fragment
whose clock the wrapper cannot see, and a server sees no clock at all: `check_run` and
`aloe serve` refuse those.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from aloe.algos.aloe_config import AloeConfig
from aloe.algos.aloe_math import BestOfNReduce, sample_best
from aloe.algos.context import RunConfig
from aloe.algos.table import ALGORITHMS
from aloe.errors import require
from aloe.nn import evaluating
from aloe.policies.chunk_policy import FlowChunkPolicy, acting


@dataclass
class EpisodeDraw:
    """One episode's sampling state in a batch (`BatchChunkPolicy.episode_rng`): the wrapped
    policy's generator and the policy steps taken so far (the clock)."""

    generator: torch.Generator
    steps: int = 0


class BestOfNPolicy:
    """A `BatchChunkPolicy`: the wrapped policy's N chunks per observation, the critic's best
    (`reduce` min: Q_pess, mean: the members' mean) returned. `clock_limit`: the critic
    reads the episode clock, divided by this (`TrainConfig.clock_limit`)."""

    def __init__(
        self,
        policy: FlowChunkPolicy,
        critic: nn.Module,
        n: int,
        reduce: BestOfNReduce = "min",
        clock_limit: int | None = None,
    ) -> None:
        self.policy = policy
        self.critic = critic
        self.n = n
        self.reduce = reduce
        self.clock_limit = clock_limit
        self.version = policy.version
        self.exec_horizon = policy.exec_horizon
        self.steps = 0

    @property
    def actor(self) -> Any:
        return self.policy.actor

    def reset(self, seed: int) -> None:
        self.policy.reset(seed)
        self.steps = 0

    def episode_rng(self, seed: int) -> EpisodeDraw:
        return EpisodeDraw(self.policy.episode_rng(seed))

    def act_chunk(self, obs: dict[str, Any]) -> np.ndarray:
        chunk = self.best([obs], self.policy.generator, [self.steps])
        self.steps += self.exec_horizon
        return chunk[0]

    def act_chunks(self, obs: Sequence[dict[str, Any]], rngs: Sequence[EpisodeDraw]) -> np.ndarray:
        chunks = self.best(obs, [r.generator for r in rngs], [r.steps for r in rngs])
        for r in rngs:
            r.steps += self.exec_horizon
        return chunks

    def best(
        self,
        obs: Sequence[dict[str, Any]],
        generator: torch.Generator | Sequence[torch.Generator],
        steps: Sequence[int],
    ) -> np.ndarray:
        """The chosen chunks (B, h, A) of observations, each `steps` policy steps into its
        episode."""
        p = self.policy
        states, rows = zip(*(p.inputs(o) for o in obs), strict=True)
        with acting(p.actor), evaluating(self.critic):  # sampled as the plain policy samples
            chunks = sample_best(
                self.critic,
                p.actor,
                torch.cat(states),
                torch.cat(rows),
                self.n,
                self.reduce,
                generator,
                images=p.images(obs),
                time=self.clock(steps),
            )
        return chunks.cpu().numpy()

    def clock(self, steps: Sequence[int]) -> torch.Tensor | None:
        """The episode clock (B, 2) at chunks `steps` policy steps into their episodes, as
        `aloe.data.episode_clock` computes it (one fragment from the start); None when the
        critic does not read it."""
        if self.clock_limit is None:
            return None
        counts = np.array([[t, t] for t in steps], dtype=np.float64)
        clock = (counts / float(self.clock_limit)).astype(np.float32)
        return torch.as_tensor(clock, device=self.policy.device)


def settings_of(cfg: RunConfig) -> AloeConfig | None:
    """The run's ALOE settings, None for another algorithm (which never picks among N)."""
    own = ALGORITHMS[cfg.algo].settings(cfg)
    return own if isinstance(own, AloeConfig) else None


def acting_policy(
    policy: FlowChunkPolicy, critic: nn.Module, cfg: RunConfig, clock_limit: int | None
) -> FlowChunkPolicy | BestOfNPolicy:
    """The policy as the run acts: `policy` itself, or with `aloe.best_of_n` > 1 wrapped to
    pick the best of N by `critic`."""
    own = settings_of(cfg)
    if own is None or own.best_of_n == 1:
        return policy
    return BestOfNPolicy(policy, critic, own.best_of_n, own.best_of_n_reduce, clock_limit)


def check_run(cfg: RunConfig, workers: int = 0) -> None:
    """Refuse, before any work, what best-of-N acting cannot do: collect on Ray workers
    (they hold the actor, not the critic), and follow the episode clock of a critic with
    `critic.time_features` into a hand-back fragment (module docstring)."""
    own = settings_of(cfg)
    if own is None or own.best_of_n == 1:
        return
    field = "config field aloe.best_of_n"
    require(
        not workers,
        field,
        own.best_of_n,
        f"picks chunks with the critic, which the --workers {workers} Ray workers do not "
        "hold: drop --workers, or set it to 1",
    )
    require(
        not (cfg.critic.time_features and cfg.collect.handback_steps > 0),
        field,
        own.best_of_n,
        "with critic.time_features cannot follow the episode clock after a hand-back "
        f"(collect.handback_steps {cfg.collect.handback_steps}): set it to 1, "
        "collect.handback_steps to 0 or critic.time_features to false",
    )


def served_choice(cfg: RunConfig, n: int | None = None) -> tuple[int, BestOfNReduce]:
    """(N, reduce) of `aloe serve` for a run: `n` where given (`--best-of-n`), else the
    run's `aloe.best_of_n`. N > 1 needs an ALOE run (its critic ranks chunks) whose critic
    does not read the episode clock, which a server never sees."""
    own = settings_of(cfg)
    if n is None:
        n = 1 if own is None else own.best_of_n
    if n == 1:
        return 1, "min"
    require(
        own is not None,
        "--best-of-n",
        n,
        f"needs an ALOE run, whose chunked Q critic ranks chunks (this one is --algo {cfg.algo})",
    )
    assert own is not None
    require(
        not cfg.critic.time_features,
        "--best-of-n",
        n,
        "the run's critic reads the episode clock (critic.time_features), which a server "
        "does not see: serve it with --best-of-n 1",
    )
    return n, own.best_of_n_reduce

"""What `aloe serve` serves: a run's latest checkpoint, swapped when a newer one is published.

`Published` watches `DIR/checkpoints` with one `stat` of the directory per poll (a new
checkpoint is renamed into it, which changes its mtime) and loads a newer iteration aside;
the swap is one reference assignment, so requests in flight and open connections carry on.
An episode keeps the version it started with (its fragments are one policy's, as in-process
collection), and every reply names the version that produced it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aloe import checkpoint
from aloe.algos.aloe_math import best_of_n_index, sample_best
from aloe.algos.best_of_n import served_choice
from aloe.datasets.store import EpisodeStore, StoreError
from aloe.envs.registry import failure_cost
from aloe.errors import bad
from aloe.nn import evaluating
from aloe.policies.chunk_policy import acting
from aloe.policies.rtc import sample_inpainted
from aloe.run import Run, load_run
from aloe.serve.protocol import Spec


class ServedPolicy:
    """One checkpoint of the run: chunks sampled as in-process collection samples them, the
    best of N by the run's critic with `best_of_n` > 1 (None: the run's `aloe.best_of_n`)."""

    def __init__(self, run: Run, best_of_n: int | None = None) -> None:
        self.run = run
        self.version = run.iteration
        self.chunks = run.chunk_policy(seed=run.config.seed)  # a FlowChunkPolicy
        self.best_of_n, self.reduce = served_choice(run.config, best_of_n)

    def rng(self, seed: int) -> torch.Generator:
        """The sampling state of the episode of `seed`, as in-process collection seeds it."""
        return self.chunks.episode_rng(seed)

    def infer(
        self,
        obs: dict[str, Any],
        generator: torch.Generator,
        rtc: tuple[np.ndarray, int] | None = None,
    ) -> np.ndarray:
        """A chunk (h, A) float32 for an environment observation; with `rtc` = (prefix,
        delay), inpainted to agree with the prefix (`aloe.policies.rtc`)."""
        state, row = self.chunks.inputs(obs)
        critic = self.run.critic
        if rtc is None:
            images = self.chunks.images([obs])
            with acting(self.chunks.actor), evaluating(critic):
                chunk = sample_best(
                    critic,
                    self.chunks.actor,
                    state,
                    row,
                    self.best_of_n,
                    self.reduce,
                    generator,
                    images=images,
                )
            return chunk[0].cpu().numpy()
        prefix = torch.as_tensor(rtc[0], dtype=torch.float32)
        chunks = torch.stack(
            [
                sample_inpainted(self.chunks.actor, state, row, prefix, rtc[1], generator)
                for _ in range(self.best_of_n)
            ]
        )
        return chunks[self.pick(state, row, chunks)].cpu().numpy()

    @torch.no_grad()
    def pick(self, state: torch.Tensor, row: torch.Tensor, chunks: torch.Tensor) -> int:
        """The index of the best of inpainted chunks (N, h, A) at one observation."""
        if len(chunks) == 1:
            return 0
        n = len(chunks)
        critic = self.run.critic
        with evaluating(critic):
            q = critic(state.expand(n, -1), row.expand(n), chunks.to(state.device))
        return int(best_of_n_index(q[:, None], self.reduce)[0])


class Published:
    """The run's newest readable checkpoint, reloaded when a newer one appears."""

    def __init__(self, root: Path, best_of_n: int | None = None) -> None:
        self.root = root
        self.dir = root / "checkpoints"
        self.best_of_n = best_of_n
        self._seen = self._stamp()
        self.current = ServedPolicy(load_run(root, what="--run"), best_of_n)

    def _stamp(self) -> int:
        try:
            return os.stat(self.dir).st_mtime_ns
        except OSError:
            return -1

    def poll(self) -> ServedPolicy | None:
        """A newer policy if one was published since the last poll (loaded, not yet swapped
        in: the caller assigns `current`), else None. Cheap when nothing changed."""
        stamp = self._stamp()
        if stamp == self._seen:
            return None
        self._seen = stamp
        newest = checkpoint.latest(self.dir)
        if newest is None or newest[0] <= self.current.version:
            return None
        try:
            return ServedPolicy(load_run(self.root, what="--run"), self.best_of_n)
        except Exception as e:  # a damaged or half-copied checkpoint: keep serving this one
            print(f"aloe serve: not swapping to {newest[1]}: {e}", file=sys.stderr)
            return None


def open_store(root: Path) -> EpisodeStore:
    """The run's episode store, which network episodes grow (the trainer's, `DIR/dataset`)."""
    try:
        return EpisodeStore.open(root / "dataset")
    except StoreError as e:
        raise bad("--run", root, f"its dataset/ is not a readable aloe store: {e}") from None


def spec_of(policy: ServedPolicy, store: EpisodeStore) -> Spec:
    cfg = policy.run.config
    return Spec(
        state_dim=store.state_dim,
        action_dim=store.action_dim,
        horizon=cfg.horizon,
        cameras={c: store.image_shape(c) for c in store.cameras},
        instructions=tuple(policy.run.obs.instructions),
        sim_state_dim=store.sim_state_dim,
    )


def failure_costs(policy: ServedPolicy) -> dict[str, float]:
    """Eq. 14's C_fail per instruction: the run's `env.c_fail`, else (as `TaskEnv`) the mean
    length of the task's expert episodes."""
    cfg = policy.run.config
    obs = policy.run.obs
    return {
        text: failure_cost(cfg.env, task)
        for task, text in zip(obs.tasks, obs.instructions, strict=True)
    }

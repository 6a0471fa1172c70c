"""The policy protocols: what an algorithm needs from a flow-matching actor (`Actor`) and
what a rollout needs from anything that acts in chunks (`ChunkPolicy`).

The compact `FlowPolicy` implements it now; a large VLA (π0.5-style) implements the same
methods later, and every algorithm (ALOE, AWR, BC, DAgger) talks to the actor only
through them. An actor is also an `nn.Module` whose `state_dict` holds tensors only, so
checkpoints can be written with safetensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Generator, Tensor, nn

from aloe.shard import draw


class ChunkPolicy(Protocol):
    """Acts in chunks on one observation at a time (what `aloe.rollout` runs)."""

    version: int  # the iteration that produced the policy; stored with its fragments
    exec_horizon: int  # actions executed from each sampled chunk before replanning

    def reset(self, seed: int) -> None:
        """A new episode: reseed sampling, so each episode depends on its seed alone."""

    def act_chunk(self, obs: dict[str, Any]) -> np.ndarray:
        """An action chunk (h, A) in [-1, 1] for one observation."""


class BatchChunkPolicy(ChunkPolicy, Protocol):
    """A `ChunkPolicy` that also acts for several episodes in one call (`aloe.rollout.play_batch`),
    each episode sampling from its own state, so that a batch plays as one episode at a time."""

    def episode_rng(self, seed: int) -> Any:
        """A fresh sampling state for the episode of `seed`, as `reset(seed)` sets the policy's."""

    def act_chunks(self, obs: Sequence[dict[str, Any]], rngs: Sequence[Any]) -> np.ndarray:
        """Chunks (B, h, A), row i for obs[i] drawn from rngs[i] (advanced) exactly as
        `act_chunk` draws from the episode's state after `reset`."""


class ChunkSampling(Protocol):
    """What draws the chunks an update scores (a' of Eq. 7, V^π's M chunks of Eq. 10): an
    `Actor`, or the one-step sampler distilled from it (aloe.policies.onestep)."""

    def sample(
        self,
        state: Tensor,
        task_index: Tensor,
        num_samples: int = 1,
        generator: Generator | Sequence[Generator] | None = None,
        *,
        images: Tensor | None = None,
    ) -> Tensor:
        """Chunks (B, num_samples, h, A) in [-1, 1] without gradient, from the noise ε that
        `chunk_noise` draws from `generator` (as `Actor.sample`)."""
        ...


@runtime_checkable
class Actor(Protocol):
    """A policy π_θ(a_{t:t+h} | s_t, ℓ) over action chunks, trained by flow matching."""

    horizon: int  # h, the number of actions in a chunk
    action_dim: int  # A

    def flow_loss_per_sample(
        self,
        state: Tensor,
        task_index: Tensor,
        actions: Tensor,
        valid: Tensor,
        generator: Generator | None = None,
        images: Tensor | None = None,
    ) -> Tensor:
        """Per-sample flow-matching loss of Eq. 15/16, shape (B,), differentiable.

        state (B, S), task_index (B,) int64, actions (B, h, A) the data chunk, valid (B, h)
        1.0 on executed steps: padded steps do not count. Noise ε and time η are drawn from
        `generator` (on the actor's device) so a seeded run is reproducible. `images`, uint8
        (B, V, H, W, 3), are the cameras' pixels for an actor that reads them (a VLA's;
        `ChunkBatch.images`); actors that read the image features in `state` ignore them.
        """
        ...

    def sample(
        self,
        state: Tensor,
        task_index: Tensor,
        num_samples: int = 1,
        generator: Generator | Sequence[Generator] | None = None,
        num_steps: int | None = None,
        images: Tensor | None = None,
    ) -> Tensor:
        """Sample chunks a ~ π(·|s, ℓ) without gradient, in eval mode: (B, num_samples, h, A).

        The sample axis is always present (also for num_samples == 1) so callers never
        branch on shape; actions are in the environment's units, clipped to [-1, 1].
        `generator` may be one per row: row i's noise then comes from generator i, as in a
        call for row i alone (a batch of episodes samples as each episode would).
        `num_steps` overrides the actor's own Euler steps (fewer steps are not samples of π:
        they shrink its spread, tests/policies/test_sampler.py); None keeps them. `images` as in
        `flow_loss_per_sample`.
        """
        ...


def chunk_noise(
    rows: int,
    num_samples: int,
    shape: tuple[int, ...],
    generator: Generator | Sequence[Generator] | None,
    device: torch.device | str,
) -> Tensor:
    """The flow's starting noise ε (rows · num_samples, *shape) of an actor's `sample`.

    With one generator per row, row i's num_samples draws come from generator i, as a call
    for row i alone would draw them; with one generator, one draw for all, the same values
    for each row however a learner's batch is sharded (aloe.shard.draw).
    """
    if isinstance(generator, Sequence):
        return torch.cat(
            [torch.randn((num_samples, *shape), generator=g, device=device) for g in generator]
        )
    return draw(torch.randn, (rows * num_samples, *shape), generator=generator, device=device)


def as_module(actor: Actor) -> nn.Module:
    """The actor as an `nn.Module` (for its parameters, modes and state_dict)."""
    if not isinstance(actor, nn.Module):
        raise TypeError(f"an actor must be an nn.Module, got {type(actor).__name__}")
    return actor

"""The actor protocol: what an algorithm needs from a flow-matching policy.

The compact `FlowPolicy` implements it now; a large VLA (π0.5-style) implements the same
methods later, and every algorithm (ALOE, AWR, BC, DAgger) talks to the actor only
through them. An actor is also an `nn.Module` whose `state_dict` holds tensors only, so
checkpoints can be written with safetensors.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Generator, Tensor, nn


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
    ) -> Tensor:
        """Per-sample flow-matching loss of Eq. 15/16, shape (B,), differentiable.

        state (B, S), task_index (B,) int64, actions (B, h, A) the data chunk, valid (B, h)
        1.0 on executed steps: padded steps do not count. Noise ε and time η are drawn from
        `generator` (on the actor's device) so a seeded run is reproducible.
        """
        ...

    def sample(
        self,
        state: Tensor,
        task_index: Tensor,
        num_samples: int = 1,
        generator: Generator | None = None,
    ) -> Tensor:
        """Sample chunks a ~ π(·|s, ℓ) without gradient, in eval mode: (B, num_samples, h, A).

        The sample axis is always present (also for num_samples == 1) so callers never
        branch on shape; actions are in the environment's units, clipped to [-1, 1].
        """
        ...


def as_module(actor: Actor) -> nn.Module:
    """The actor as an `nn.Module` (for its parameters, modes and state_dict)."""
    if not isinstance(actor, nn.Module):
        raise TypeError(f"an actor must be an nn.Module, got {type(actor).__name__}")
    return actor

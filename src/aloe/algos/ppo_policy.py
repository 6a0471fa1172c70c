"""The policy PPO+SBC optimises (aloe.algos.ppo_sbc): a Gaussian around the flow's sample.

A flow policy has no tractable chunk likelihood, so PPO works with
    μ_θ(s) = the flow Euler-integrated from the fixed noise ε = 0 (the prior's mean),
    a ~ N(μ_θ(s), diag σ²),  σ = exp(log σ) learnable per action dimension.
`GaussianFlowActor` is that actor (evaluated deterministically, at μ_θ(s)); the
`ExploringChunkPolicy` draws a per decision while collecting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Generator, Tensor, nn

from aloe.nn import evaluating
from aloe.policies.chunk_policy import FlowChunkPolicy
from aloe.policies.flow import FlowPolicy, euler_integrate


class GaussianFlowActor(nn.Module):
    """The flow actor plus a learnable log σ; implements the `Actor` protocol.

    `flow_loss_per_sample` is the flow's (BC); `sample` returns μ_θ(s), the deterministic
    policy that is evaluated; `mean_chunk` is μ_θ(s) with gradient, for PPO.
    """

    def __init__(
        self,
        flow: FlowPolicy,
        init_std: float,
        min_std: float,
        max_std: float,
        learn_std: bool = True,
    ) -> None:
        super().__init__()
        self.flow = flow
        self.horizon = flow.horizon
        self.action_dim = flow.action_dim
        self.log_std = nn.Parameter(
            torch.full((flow.action_dim,), math.log(init_std)), requires_grad=learn_std
        )
        self.log_std_range = (math.log(min_std), math.log(max_std))

    def clamped_log_std(self) -> Tensor:
        return self.log_std.clamp(*self.log_std_range)

    def mean_chunk(self, state: Tensor, task_index: Tensor) -> Tensor:
        """μ_θ(s) (B, h, A): the flow integrated from ε = 0, unclipped, with gradient."""
        f = self.flow
        cond = f.condition(state, task_index)
        zero = torch.zeros(
            state.shape[0], f.horizon, f.action_dim, device=cond.device, dtype=cond.dtype
        )
        a = euler_integrate(lambda x, t: f.velocity(x, t, cond), zero, f.config.num_flow_steps)
        return f.action_norm.unnormalize(a)

    def flow_loss_per_sample(
        self,
        state: Tensor,
        task_index: Tensor,
        actions: Tensor,
        valid: Tensor,
        generator: Generator | None = None,
        images: Tensor | None = None,
    ) -> Tensor:
        return self.flow.flow_loss_per_sample(state, task_index, actions, valid, generator)

    @torch.no_grad()
    def sample(
        self,
        state: Tensor,
        task_index: Tensor,
        num_samples: int = 1,
        generator: Generator | Sequence[Generator] | None = None,
        num_steps: int | None = None,
        images: Tensor | None = None,
    ) -> Tensor:
        """The deterministic μ_θ(s), repeated: (B, num_samples, h, A), clipped to [−1, 1]
        (no noise and no integration: `generator` and `num_steps` are not used; `images`
        neither: this actor reads the image features in `state`)."""
        with evaluating(self):
            mean = self.mean_chunk(state, task_index).clamp(-1.0, 1.0)
        return mean[:, None].expand(-1, num_samples, -1, -1).contiguous()


class ExploringChunkPolicy(FlowChunkPolicy):
    """A `ChunkPolicy` drawing a ~ N(μ_θ(s), σ²) per decision; noise reseeded per episode."""

    @torch.no_grad()
    def act_chunk(self, obs: dict[str, Any]) -> np.ndarray:
        with evaluating(self.actor):
            mean = self.actor.mean_chunk(*self.inputs(obs))[0]
        noise = torch.randn(mean.shape, generator=self.generator, device=self.device)
        return (mean + self.actor.clamped_log_std().exp() * noise).cpu().numpy()

"""The update's one-step sampler μ(s, ℓ, ε) (`aloe.update_sampler one-step`), as in flow
Q-learning (FQL, Park, Li & Levine 2025): one network call from the flow's noise ε to the
chunk that the actor's own Euler steps reach from the same ε.

Distilled to that map (`distillation_loss`), μ keeps π's spread and its modes: it sends
noise to samples, whereas a few Euler steps return nearly the mean chunk whatever ε was
(tests/policies/test_flow_sampler.py). ALOE's learner trains it after every actor update on
the same batch and draws the update's a' (Eq. 7) and V^π's M chunks (Eq. 10) from it; the
actor still acts with its own Euler steps. μ is an MLP over [normalised state, instruction
embedding, flattened ε] that works, like the flow, in normalised action units: its
normalisers are copies of the actor's, which never change after the warm start builds it.

The state is normalised with the successful demonstrations' statistics, in which some
features hardly move (std ~1e-3 on pick-place-v3), so states of failed or policy episodes
lie hundreds of stds out (|z| up to ~2 000 in a default run's buffer). The actor's
pre-norm transformer takes that in its stride; a plain MLP's output grows with it (μ's
std was 10 against the flow's 0.3 after a default warm start). So μ clips z to ±Z_CLIP
and normalises each hidden layer (LayerNorm, as qc's MLP critics).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Generator, Tensor, nn

from aloe.nn import InstructionToken, Normalizer, evaluating
from aloe.policies.base import chunk_noise
from aloe.policies.flow import FlowPolicy

# Width of μ's instruction embedding: narrow, so that in the first layer's fan-in it does not
# drown the state and the noise (at the hidden width it slowed distillation ~1.5×).
INSTRUCTION_DIM = 16
Z_CLIP = 5.0  # |normalised state| that μ reads at most (module docstring)


class OneStepPolicy(nn.Module):
    """μ(s, ℓ, ε) -> chunk (normalised units); `sample` has the flow's noise convention, so
    μ and the actor given generators in the same state map the same ε."""

    def __init__(
        self,
        state_dim: int,
        action_dim: int,
        num_tasks: int,
        *,
        horizon: int,
        hidden_dim: int = 256,
        num_layers: int = 3,
        state_normalizer: Normalizer | None = None,
        action_normalizer: Normalizer | None = None,
        instruction_features: Tensor | None = None,
    ) -> None:
        """`num_layers` hidden layers (Linear, LayerNorm, GELU) of width `hidden_dim`; the
        instruction enters as an embedding of INSTRUCTION_DIM (a learned one per task, or a
        projection of frozen sentence embeddings, as the actor's)."""
        super().__init__()
        self.horizon = horizon
        self.action_dim = action_dim
        self.state_norm = state_normalizer or Normalizer(state_dim)
        self.action_norm = action_normalizer or Normalizer(action_dim)
        self.instruction = InstructionToken(num_tasks, INSTRUCTION_DIM, instruction_features)
        chunk = horizon * action_dim
        layers: list[nn.Module] = []
        width = state_dim + INSTRUCTION_DIM + chunk
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden_dim), nn.LayerNorm(hidden_dim), nn.GELU()]
            width = hidden_dim
        self.net = nn.Sequential(*layers, nn.Linear(width, chunk))

    @classmethod
    def distilling(cls, actor: FlowPolicy, hidden_dim: int, num_layers: int) -> OneStepPolicy:
        """μ for `actor`: its sizes, copies of its normalisers, its instruction features."""
        return cls(
            actor.state_norm.mean.numel(),
            actor.action_dim,
            actor.instruction.num_tasks,
            horizon=actor.horizon,
            hidden_dim=hidden_dim,
            num_layers=num_layers,
            state_normalizer=copy.deepcopy(actor.state_norm),
            action_normalizer=copy.deepcopy(actor.action_norm),
            instruction_features=getattr(actor.instruction, "features", None),
        )

    def forward(self, state: Tensor, task_index: Tensor, noise: Tensor) -> Tensor:
        """μ(s, ℓ, ε) (B·n, h, A) for noise (B·n, h, A), n per state (B, S) in a row's order
        (as `FlowPolicy.integrate` takes them)."""
        n = noise.shape[0] // state.shape[0]
        z = self.state_norm.normalize(state).clamp(-Z_CLIP, Z_CLIP)
        cond = torch.cat([z, self.instruction(task_index)], dim=-1)
        x = torch.cat([cond.repeat_interleave(n, dim=0), noise.flatten(1)], dim=-1)
        return self.net(x).view_as(noise)

    @torch.no_grad()
    def sample(
        self,
        state: Tensor,
        task_index: Tensor,
        num_samples: int = 1,
        generator: Generator | Sequence[Generator] | None = None,
        *,
        images: Tensor | None = None,
    ) -> Tensor:
        """Chunks (B, num_samples, h, A) in environment units, clipped to [-1, 1], from ε
        drawn by `chunk_noise` as `FlowPolicy.sample` draws it; `images` is not read."""
        b = state.shape[0]
        h, a_dim = self.horizon, self.action_dim
        noise = chunk_noise(b, num_samples, (h, a_dim), generator, state.device)
        with evaluating(self):
            a = self(state, task_index, noise)
        return self.action_norm.unnormalize(a).clamp(-1.0, 1.0).view(b, num_samples, h, a_dim)


def distillation_loss(chunks: Tensor, target: Tensor) -> tuple[Tensor, dict[str, float]]:
    """||μ(s, ℓ, ε) − sg(flow(s, ℓ, ε))||² per action slot, for μ's chunks and the flow's
    from the same ε (N, h, A), averaged over every slot: the update scores μ's chunks
    whole (a' always, V^π's with `value_steps full`), so none is padding.

    Metrics: `onestep/mse`, and `onestep/rel_err`, the RMSE in units of the flow's spread
    over the batch (its per-slot std, mean square over the slots): 0 is exact, 1 no better
    than the batch's mean chunk.
    """
    target = target.detach()
    mse = (chunks - target).square().mean()
    spread = target.var(dim=0, correction=0).mean()
    rel = (mse.detach() / spread.clamp_min(1e-12)).sqrt()
    return mse, {"onestep/mse": float(mse.detach()), "onestep/rel_err": float(rel)}


def distil(
    mu: OneStepPolicy,
    flow: FlowPolicy,
    state: Tensor,
    task_index: Tensor,
    generator: Generator | None,
) -> tuple[Tensor, dict[str, float]]:
    """The distillation loss on a batch's states (B, S): one ε per state from `generator`
    (`chunk_noise`), the flow's own Euler steps from it without gradient, μ from the same ε
    in training mode."""
    noise = chunk_noise(state.shape[0], 1, (mu.horizon, mu.action_dim), generator, state.device)
    target = flow.integrate(state, task_index, noise)  # flow_10step(s, ℓ, ε), no gradient
    mu.train()
    return distillation_loss(mu(state, task_index, noise), target)

"""A compact flow-matching VLA: the actor π_θ(a_{t:t+h} | s_t, ℓ) of ALOE (Sec. IV-C).

One time convention, the paper's Eq. 15, written once below (`interpolate`):
ã = η·a + (1 − η)·ε with η ~ U[0, 1], ε ~ N(0, I); the network f_θ(ã, s, ℓ, η) regresses
ε − a. Sampling starts from ε at η = 0 and integrates dã/dη = a − ε = −f_θ to η = 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Generator, Tensor, nn

from aloe.errors import require
from aloe.nn import (
    FixedPrefix,
    InstructionToken,
    Normalizer,
    ObservationTokens,
    accept_legacy_keys,
    compilable,
    evaluating,
    mlp,
    sinusoidal_embedding,
    transformer,
)
from aloe.policies.base import chunk_noise
from aloe.policies.indicator import DROPPED, NUM_INDICATORS, Guidance, guided_velocity
from aloe.shard import draw

VelocityFn = Callable[[Tensor, Tensor], Tensor]  # (ã (B, h, A), η (B,)) -> f (B, h, A)


@dataclass
class ActorConfig:
    """Architecture of the compact actor (defaults: state-based MetaWorld on 2 CPU cores).

    Optimiser settings belong to the algorithm that trains it (e.g. `AloeConfig.actor_lr`);
    the chunk length h is the run's (`TrainConfig.horizon`), given to `FlowPolicy`.
    """

    num_flow_steps: int = 10
    """Euler steps from noise (η = 0) to action (η = 1) when sampling (paper: 10)."""
    hidden_dim: int = 128
    """Token width D of the action expert."""
    num_layers: int = 2
    """Transformer layers of the action expert (sampling runs it num_flow_steps times per
    chunk, M + 1 chunks per ALOE step: it dominates the update cost on CPU)."""
    num_heads: int = 4
    """Attention heads per layer (hidden_dim must be divisible by it)."""
    mlp_ratio: int = 4
    """Feed-forward width as a multiple of hidden_dim."""
    dropout: float = 0.0
    """Dropout in the transformer and the state encoder."""

    def validate(self, prefix: str = "") -> None:
        """Raise UsageError naming the first field out of range, `actor.num_heads (0): must be
        >= 1`; `prefix` leads the name ("config field " for a run's config)."""
        checks = [
            (name, getattr(self, name) >= 1, "must be >= 1")
            for name in ("num_flow_steps", "hidden_dim", "num_layers", "num_heads", "mlp_ratio")
        ]
        checks += [
            (
                "hidden_dim",
                self.hidden_dim % self.num_heads == 0,
                f"must be a multiple of actor.num_heads ({self.num_heads})",
            ),
            ("dropout", 0 <= self.dropout < 1, "must be in [0, 1)"),
        ]
        for name, ok, allowed in checks:
            require(ok, f"{prefix}actor.{name}", getattr(self, name), allowed)


def interpolate(actions: Tensor, noise: Tensor, eta: Tensor) -> tuple[Tensor, Tensor]:
    """The noisy chunk ã and the regression target of Eq. 15, for chunks (B, h, A), η (B,)."""
    eta = eta[:, None, None]
    noisy = eta * actions + (1.0 - eta) * noise  # Eq. 15: ã = η a + (1 − η) ε
    return noisy, noise - actions  # Eq. 15: f_θ(ã, s, ℓ, η) ≈ ε − a


def flow_matching_loss(
    velocity: VelocityFn, actions: Tensor, valid: Tensor, noise: Tensor, eta: Tensor
) -> Tensor:
    """Per-sample ||ε − a − f_θ(ã, s, ℓ, η)||² (Eq. 15–16), averaged over valid steps: (B,).

    The squared norm sums over the action dimensions; padded steps (valid = 0) do not
    count, and a row without a valid step has loss 0.
    """
    noisy, target = interpolate(actions, noise, eta)
    err = (target - velocity(noisy, eta)).square().sum(-1)  # Eq. 15, per step (B, h)
    return (err * valid).sum(-1) / valid.sum(-1).clamp_min(1.0)


def euler_integrate(velocity: VelocityFn, noise: Tensor, num_steps: int) -> Tensor:
    """Integrate from ã = ε at η = 0 to η = 1 with `num_steps` Euler steps: the chunk a."""
    x = noise
    dt = 1.0 / num_steps
    for k in range(num_steps):
        eta = torch.full((x.shape[0],), k * dt, device=x.device, dtype=x.dtype)
        x = x - velocity(x, eta) * dt  # dã/dη = a − ε = −f_θ
    return x


class FlowPolicy(nn.Module):
    """Observation + instruction encoders and a transformer action expert predicting f_θ.

    Tokens: [s, x_1..x_V, ℓ, ã_1..ã_h], with x_v a trainable adapter of camera v's frozen
    image features (the observation vector's layout is `obs_layout`, see aloe.nn) and ℓ the
    instruction (a learned embedding, or a projection of frozen sentence embeddings given as
    `instruction_features`). Each action token mixes its noisy action with the flow time η
    (as π0's action-time MLP does: every token knows η directly) plus a learned position.
    Actions are handled in normalised units inside; `sample` returns environment units.
    `compiled` (`aloe.nn.set_compiled`) runs `velocity` and `integrate` through torch.compile.

    Advantage conditioning (RECAP, `use_indicator`): a learned embedding of the improvement
    indicator (negative / positive / dropped) is added to the instruction token, and the
    actor samples under its `guidance` (positive, with β_cfg). Without it the actor has no
    such parameters and computes exactly as before.
    """

    compiled: bool = False
    indicator: nn.Parameter | None
    """(3, D) indicator embeddings, zero at first (`use_indicator`); None: not conditioned."""
    guidance: Guidance | None = None
    """What `sample` conditions on (`use_indicator`); None: the instruction alone."""

    def __init__(
        self,
        config: ActorConfig,
        state_dim: int,
        action_dim: int,
        num_tasks: int,
        state_normalizer: Normalizer | None = None,
        action_normalizer: Normalizer | None = None,
        obs_layout: tuple[int, ...] | None = None,
        instruction_features: Tensor | None = None,
        *,
        horizon: int,
    ) -> None:
        """`horizon` is h, the actions per predicted chunk (paper: 50 at 30 Hz)."""
        super().__init__()
        layout = obs_layout or (state_dim,)
        if sum(layout) != state_dim:
            raise ValueError(f"obs_layout {layout} does not add up to state_dim {state_dim}")
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        d = config.hidden_dim
        self.config = config
        self.horizon = horizon
        self.action_dim = action_dim
        self.state_norm = state_normalizer or Normalizer(state_dim)
        # MetaWorld actions are already in [-1, 1]: the identity is the natural default.
        self.action_norm = action_normalizer or Normalizer(action_dim)
        self.obs_encoder = ObservationTokens(layout, d, config.dropout)
        self.instruction = InstructionToken(num_tasks, d, instruction_features)
        accept_legacy_keys(self)
        self.action_in = nn.Linear(action_dim, d)
        self.action_time = mlp(2 * d, d, d, num_hidden=1)
        self.action_pos = nn.Parameter(0.02 * torch.randn(horizon, d))
        self.backbone = transformer(
            d, config.num_layers, config.num_heads, config.mlp_ratio, config.dropout
        )
        self.velocity_out = nn.Linear(d, action_dim)
        self.register_parameter("indicator", None)  # no parameter, no key: as before RECAP

    def use_indicator(self, guidance: Guidance) -> None:
        """Condition on the improvement indicator from now on, acting on `guidance`: adds the
        indicator embeddings, zero so that each indicator starts as the unconditional policy
        (a fresh RECAP actor is the plain one; no random draw, so the actor's initial
        weights are those of any run with the same seed)."""
        if self.indicator is None:
            dim = self.config.hidden_dim
            weight = self.velocity_out.weight
            self.indicator = nn.Parameter(weight.new_zeros(NUM_INDICATORS, dim))
        self.guidance = guidance

    def condition(
        self, state: Tensor, task_index: Tensor, indicator: Tensor | None = None
    ) -> Tensor:
        """Conditioning tokens (B, C, D) from the observation and the instruction, plus with
        `use_indicator` the embedding of `indicator` (B,) (None: dropped)."""
        obs = self.obs_encoder(self.state_norm.normalize(state))
        instruction = self.instruction(task_index)
        if self.indicator is not None:
            rows = torch.full_like(task_index, DROPPED) if indicator is None else indicator
            instruction = instruction + self.indicator[rows]  # like the instruction token
        elif indicator is not None:
            raise ValueError("this actor is not conditioned on an indicator (use_indicator)")
        return torch.cat([obs, instruction[:, None]], dim=1)

    @compilable
    def velocity(self, noisy_actions: Tensor, eta: Tensor, cond: Tensor) -> Tensor:
        """f_θ(ã, s, ℓ, η) in normalised action units: (B, h, A)."""
        x = self.action_in(noisy_actions)
        t = sinusoidal_embedding(eta, x.shape[-1]).to(x.dtype)
        x = self.action_time(torch.cat([x, t[:, None].expand_as(x)], dim=-1)) + self.action_pos
        z = self.backbone(torch.cat([cond, x], dim=1))
        return self.velocity_out(z[:, cond.shape[1] :])

    def flow_loss_per_sample(
        self,
        state: Tensor,
        task_index: Tensor,
        actions: Tensor,
        valid: Tensor,
        generator: Generator | None = None,
        images: Tensor | None = None,
        indicator: Tensor | None = None,
    ) -> Tensor:
        """Eq. 15's per-sample loss (B,); draws ε (B, h, A) then η (B,) from `generator`.
        `images` is not read: this actor reads the cameras' features in `state`.
        `indicator` (B,): each row's improvement indicator (`use_indicator`; None: none)."""
        a = self.action_norm.normalize(actions)
        # shard-invariant under several learner processes (aloe.shard)
        noise = draw(torch.randn, a.shape, generator=generator, device=a.device, dtype=a.dtype)
        eta = draw(torch.rand, a.shape[:1], generator=generator, device=a.device, dtype=a.dtype)
        cond = self.condition(state, task_index, indicator)
        return flow_matching_loss(
            lambda x, t: self.velocity(x, t, cond), a, valid.to(a.dtype), noise, eta
        )

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
        """Chunks a ~ π(·|s, ℓ): (B, num_samples, h, A), clipped to [-1, 1], in eval mode.

        The conditioning tokens are encoded once per state and shared by its num_samples
        chunks and every Euler step. With one generator per row, row i's noise ε
        (num_samples, h, A) is drawn from generator i, as a call for row i alone would draw
        it. `num_steps` (default config.num_flow_steps) sets the Euler steps. `images` is not
        read (the features are in `state`). An advantage-conditioned actor samples under its
        `guidance` (`integrate`).
        """
        b = state.shape[0]
        h = self.horizon
        a_dim = self.action_dim
        noise = chunk_noise(b, num_samples, (h, a_dim), generator, state.device)
        a = self.integrate(state, task_index, noise, num_steps)
        return self.action_norm.unnormalize(a).clamp(-1.0, 1.0).view(b, num_samples, h, a_dim)

    @torch.no_grad()
    def integrate(
        self, state: Tensor, task_index: Tensor, noise: Tensor, num_steps: int | None = None
    ) -> Tensor:
        """The flow's chunks from given noise ε (B·n, h, A), n per state (B, S) in a row's
        order: normalised action units, unclipped, in eval mode. `sample` draws ε and calls
        it; the one-step sampler is distilled to it for the same ε (aloe.policies.onestep).
        Under a `guidance` with β ≠ 1 each Euler step is classifier-free guided: the
        conditional and unconditional condition tokens are stacked into one batch (2B·n)."""
        n = noise.shape[0] // state.shape[0]
        with evaluating(self):
            cond, beta = self.acting_condition(state, task_index)
            halves = cond.view(-1, state.shape[0], *cond.shape[1:])  # (1 or 2, B, C, D)
            cond = halves.repeat_interleave(n, dim=1).flatten(0, 1)
            steps = num_steps or self.config.num_flow_steps
            return self.euler(noise.to(cond.dtype), cond, steps, beta)

    def acting_condition(self, state: Tensor, task_index: Tensor) -> tuple[Tensor, float | None]:
        """The condition tokens the actor acts on, and β_cfg where each step is guided: the
        instruction's (B, C, D) and None without `guidance`; the indicator's with β = 1; else
        the indicator's rows then the dropped indicator's (2B, C, D), and β."""
        guidance = self.guidance
        if guidance is None:
            return self.condition(state, task_index), None
        on = torch.full_like(task_index, guidance.indicator)
        if not guidance.guided:  # β = 1: the conditional policy alone, one forward
            return self.condition(state, task_index, on), None
        both = torch.cat([on, torch.full_like(task_index, DROPPED)])
        return self.condition(state.repeat(2, 1), task_index.repeat(2), both), guidance.beta

    def acting_velocity(self, state: Tensor, task_index: Tensor) -> VelocityFn:
        """f(ã, η) as the actor acts at these states (real-time chunking's guided steps,
        aloe.policies.rtc): `velocity` under `acting_condition`, classifier-free guided
        there with both branches in one batch."""
        cond, beta = self.acting_condition(state, task_index)
        if beta is None:
            return lambda x, t: self.velocity(x, t, cond)

        def guided(x: Tensor, t: Tensor) -> Tensor:
            on, free = self.velocity(torch.cat([x, x]), torch.cat([t, t]), cond).chunk(2)
            return guided_velocity(on, free, beta)  # CFG, both branches in one batch

        return guided

    @compilable
    def euler(
        self, noise: Tensor, cond: Tensor, num_steps: int, beta: float | None = None
    ) -> Tensor:
        """`euler_integrate` of `velocity` from `noise` given `cond`, in eval mode, with what
        no Euler step changes done once: action_in folded into the action-time MLP's first
        layer, that layer's flow-time half at every step's η in one product, dt folded into
        the output layer, the condition tokens' first-layer keys and values and every
        weight looked up (`aloe.nn.FixedPrefix`). The same chunks as the step-by-step path
        to float rounding (tested to 1e-5). With `beta`, `cond` holds the conditional rows
        then the unconditional ones (2× noise's rows): each step runs both in one batch
        and moves by their classifier-free guided velocity (`guided_velocity`)."""
        d = self.config.hidden_dim
        first = cast(nn.Linear, self.action_time[0])
        act = self.action_time[1]
        second = cast(nn.Linear, self.action_time[2])
        w_x = first.weight[:, :d]  # the first layer's action half
        w_t = first.weight[:, d:]  # and its flow-time half
        w_in = w_x @ self.action_in.weight  # ã -> action half, (D, A)
        dt = 1.0 / num_steps
        eta = torch.tensor([k * dt for k in range(num_steps)], device=noise.device)
        t = sinusoidal_embedding(eta, d).to(noise.dtype)
        time_part = F.linear(t, w_t, first.bias + w_x @ self.action_in.bias)  # (steps, D)
        out_w = self.velocity_out.weight * dt
        out_b = self.velocity_out.bias * dt
        encode = FixedPrefix(self.backbone, cond)
        x = noise
        for part in time_part.unbind(0):
            both = x if beta is None else torch.cat([x, x])
            tokens = F.linear(act(F.linear(both, w_in, part)), second.weight, second.bias)
            z = encode(tokens + self.action_pos)
            step = F.linear(z, out_w, out_b)
            if beta is not None:
                cond_step, free_step = step.chunk(2)
                step = guided_velocity(cond_step, free_step, beta)  # CFG, at every flow step
            x = x - step  # dã/dη = a − ε = −f_θ, times dt
        return x

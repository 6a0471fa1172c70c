"""AWR with a distributional state value (Appendix C-3), on ALOE's loop, actor and optimisers.

Value: ALOE's critic transformer with K = 1 readout token, no action tokens and a head of
N = 256 logits p over fixed returns z_1..z_N spaced evenly in [V_min, V_max]:
V(s) = Σ_i z_i softmax(p)_i. It is trained by cross-entropy against the Monte-Carlo return
of the buffer, spread over its two neighbouring bins (the usual two-bin projection).

Actor: A = G_t − V(s_t), w = exp(clip(A/β, −ε, ε)) (`advantage_weights`, Eq. 11), and the
same weighted flow-matching loss as ALOE (`weighted_flow_loss`, Eq. 15).

Which return. G_t is the chunk's `mc_return`: the discounted return from t to the end of
t's fragment, the quantity the value regresses on. A is then the residual of that
regression, E_D[A | s] = 0 under the data mixture — the behaviour-mixture advantage AWR
and RECAP use. (The chunked n-step return r_{t:t+h} + γ^h V(s_{t+h}) would have lower
variance but mixes in the value's bias; Monte-Carlo keeps AWR what the paper compares
against: trajectory-level, not action-level, value information.) A fragment cut without an
outcome (a hand-back, or a time limit that is not a failure) ends its return there.

V_min and V_max. Under Eq. 14 every step pays −1 and a failed end −C_fail, so a
discounted return lies in [−(C_fail + 1/(1 − γ)), 0] whatever the episode's length: the
defaults (`v_min = None`) use exactly that range, 0.8 return units per bin at C_fail ≈ 100,
γ = 0.99. Returns outside the range are clipped onto its end bins.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from aloe.algos import aloe
from aloe.algos.aloe import weighted_actor_update
from aloe.algos.aloe_math import advantage_weights
from aloe.algos.bc import bc_update
from aloe.algos.context import LearnerParts, UpdateContext, step_means
from aloe.algos.optimised import OptimConfig, OptimisedModule, to_device
from aloe.critics.chunked_q import ChunkedQCritic, CriticConfig
from aloe.data import ChunkBatch
from aloe.envs.registry import operator_episode_length
from aloe.envs.tasks import task_list
from aloe.errors import require
from aloe.nn import Normalizer, evaluating
from aloe.policies.base import Actor, as_module


@dataclass
class AwrConfig:
    """AWR's own hyper-parameters (`--awr.*`); optimiser, batch size and γ are every
    learner's (`optim.*`), so that AWR and ALOE differ only in the value they weight with."""

    num_bins: int = 256
    """N, atoms of the distributional value (paper: 256)."""
    v_min: float | None = None
    """V_min, the lowest atom; None = −(C_fail + 1/(1 − γ)), the lowest Eq. 14 return."""
    v_max: float = 0.0
    """V_max, the highest atom: 0, Eq. 14's return at a successful end."""
    beta: float = 5.0
    """β of the weight exp(A/β), in return units (as `aloe.beta`, for a like-for-like test)."""
    eps_clip: float = 3.0
    """ε of the clip of A/β (as `aloe.eps_clip`)."""
    value_steps: int = 500
    """Value (cross-entropy) updates per iteration (as `aloe.critic_steps`)."""
    actor_steps: int = 250
    """Weighted flow-matching updates per iteration (as `aloe.actor_steps`)."""
    normalize_advantage: bool = False
    """Divide A by its batch std before the weight (as `aloe.normalize_advantage`)."""

    def validate(self, prefix: str = "") -> None:
        """Raise UsageError naming the first field out of range, `awr.num_bins (1): must be
        >= 2`; `prefix` leads the name ("config field " for a run's config)."""
        checks: list[tuple[str, bool, str]] = [
            ("num_bins", self.num_bins >= 2, "must be >= 2"),
            ("v_max", math.isfinite(self.v_max), "must be a finite number"),
            (
                "v_min",
                self.v_min is None or (math.isfinite(self.v_min) and self.v_min < self.v_max),
                f"must be None or a finite number < v_max ({self.v_max})",
            ),
            ("beta", self.beta > 0, "must be > 0"),
            ("eps_clip", self.eps_clip > 0, "must be > 0"),
            ("value_steps", self.value_steps >= 0, "must be >= 0"),
            ("actor_steps", self.actor_steps >= 0, "must be >= 0"),
        ]
        for name, ok, allowed in checks:
            require(ok, f"{prefix}awr.{name}", getattr(self, name), allowed)


def preset(name: str) -> AwrConfig:
    """AWR's update budget in preset `name` (smoke | default | paper | mt10): in each, ALOE's
    (critic steps as value steps), so that the two differ only in the value they weight with."""
    if name == "smoke":
        return AwrConfig(value_steps=20, actor_steps=10)
    if name in ("default", "mt10"):
        return AwrConfig(value_steps=400, actor_steps=200)
    return AwrConfig()


def value_range(cfg: AwrConfig, c_fail: float, gamma: float) -> tuple[float, float]:
    """(V_min, V_max): the configured ones, or Eq. 14's return range when v_min is None."""
    v_min = -(c_fail + 1.0 / (1.0 - gamma)) if cfg.v_min is None else cfg.v_min
    return float(v_min), float(cfg.v_max)


# The distributional value.


def bin_values(v_min: float, v_max: float, num_bins: int) -> Tensor:
    """The atoms z_1..z_N, evenly spaced from V_min to V_max inclusive: (N,)."""
    return torch.linspace(v_min, v_max, num_bins)


def project_onto_bins(returns: Tensor, v_min: float, v_max: float, num_bins: int) -> Tensor:
    """Two-bin projection of returns (B,) onto the atoms: (B, N), rows summing to 1.

    A return between atoms z_l and z_{l+1} puts (z_{l+1} − G)/Δ on l and (G − z_l)/Δ on
    l + 1, so Σ_i z_i p_i = G exactly; a return outside [V_min, V_max] is clipped first.
    """
    delta = (v_max - v_min) / (num_bins - 1)
    pos = (returns.clamp(v_min, v_max) - v_min) / delta  # b = (G − V_min)/Δ ∈ [0, N − 1]
    lower = pos.floor().clamp(max=num_bins - 2)
    upper_mass = pos - lower
    target = torch.zeros(returns.shape[0], num_bins, dtype=returns.dtype, device=returns.device)
    target.scatter_(1, lower.long()[:, None], (1.0 - upper_mass)[:, None])
    target.scatter_add_(1, lower.long()[:, None] + 1, upper_mass[:, None])
    return target


def value_from_logits(logits: Tensor, v_min: float, v_max: float) -> Tensor:
    """V(s) = Σ_i z_i softmax(p)_i for logits (B, N): (B,)."""
    z = bin_values(v_min, v_max, logits.shape[-1]).to(logits)
    return (logits.softmax(dim=-1) * z).sum(dim=-1)  # App. C-3: V(s) = Σ z_i e^{p_i}/Σ e^{p_j}


def value_loss(
    logits: Tensor, returns: Tensor, v_min: float, v_max: float
) -> tuple[Tensor, dict[str, float]]:
    """Cross-entropy of the value distribution against projected returns (B,)."""
    target = project_onto_bins(returns.detach(), v_min, v_max, logits.shape[-1])
    loss = -(target * logits.log_softmax(dim=-1)).sum(dim=-1).mean()
    v = value_from_logits(logits.detach(), v_min, v_max)
    metrics = {
        "value/loss": float(loss.detach()),
        "value/v_mean": float(v.mean()),
        "value/v_abs_err": float((v - returns).abs().mean()),
        "value/target_mean": float(returns.mean()),
    }
    return loss, metrics


class DistributionalHead(nn.Module):
    """The single readout token (B, 1, D) -> N logits (B, N)."""

    def __init__(self, dim: int, hidden_dim: int, num_bins: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, num_bins)
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z[:, 0])


def value_critic(
    config: CriticConfig,
    state_dim: int,
    num_tasks: int,
    num_bins: int,
    state_normalizer: Normalizer | None = None,
    **tokens: Any,
) -> ChunkedQCritic:
    """ALOE's critic transformer with K = 1, no action tokens and a `num_bins`-logit head.

    Called as `critic(state, task_index)` it returns the logits p (B, N). `tokens` are the
    observation layout and instruction features, as for ALOE's critic.
    """
    cfg = CriticConfig(**{**vars(config), "num_q": 1})
    head = DistributionalHead(cfg.hidden_dim, cfg.head_hidden_dim, num_bins)
    return ChunkedQCritic(cfg, state_dim, 0, num_tasks, state_normalizer, head=head, **tokens)


# The learner.


class AwrLearner:
    """ALOE's actor and actor update, weighted with A = G_t − V(s_t) from the distributional
    V(s) (`critic`); each network is an `OptimisedModule` with the shared settings (`optim`).
    Monte-Carlo targets need no target network.
    """

    def __init__(
        self,
        actor: Actor,
        critic: ChunkedQCritic,
        awr: AwrConfig,
        v_range: tuple[float, float],
        optim: OptimConfig | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        optim = optim or OptimConfig()
        self.awr = awr
        self.device = torch.device(device)
        self.actor = actor
        self.actor_module = as_module(actor).to(self.device)
        self.critic = critic.to(self.device)
        self.actor_opt = OptimisedModule(self.actor_module, optim.actor_lr, optim)
        self.value_opt = OptimisedModule(self.critic, optim.critic_lr, optim)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(optim.seed)
        self.v_min, self.v_max = v_range

    @property
    def beta(self) -> float:
        """β of the weight exp(A/β) (aloe.evaluation.weights)."""
        return self.awr.beta

    def value(self, state: Tensor, task_index: Tensor) -> Tensor:
        """V(s) (B,) from the distributional head."""
        return value_from_logits(self.critic(state, task_index), self.v_min, self.v_max)

    def value_step(self, batch: ChunkBatch) -> dict[str, float]:
        """One cross-entropy update of the value on the batch's Monte-Carlo returns."""
        b = to_device(batch, self.device)
        self.critic.train()
        logits = self.critic(b.state, b.task_index)
        loss, metrics = value_loss(logits, b.mc_return, self.v_min, self.v_max)
        return self.value_opt.step(loss, metrics, "value")

    def actor_step(self, batch: ChunkBatch) -> dict[str, float]:
        """One advantage-weighted flow-matching update (ALOE's, Eq. 15)."""
        b = to_device(batch, self.device)
        w, metrics = self.actor_weights(b)
        return weighted_actor_update(self.actor, self.actor_opt, b, w, metrics, self.generator)

    def actor_weights(self, b: ChunkBatch) -> tuple[Tensor, dict[str, float]]:
        """The weights of the advantage-weighted flow-matching update, A = G_t − V(s_t)."""
        cfg = self.awr
        with torch.no_grad(), evaluating(self.critic):
            v = self.value(b.state, b.task_index)
        w, metrics = advantage_weights(  # Eq. 11 with A = G_t − V(s_t)
            b.mc_return, v, cfg.beta, cfg.eps_clip, cfg.normalize_advantage
        )
        metrics["actor/return_mean"] = float(b.mc_return.mean())
        metrics["actor/v_mean"] = float(v.mean())
        return w, metrics

    def bc_step(self, batch: ChunkBatch, valid_rows_mask: Tensor | None = None) -> dict[str, float]:
        """One behaviour-cloning update (the warm start, Eq. 16) on the actor's optimiser."""
        mask = None if valid_rows_mask is None else valid_rows_mask.to(self.device)
        b = to_device(batch, self.device)
        return bc_update(self.actor, self.actor_opt, b, self.generator, mask)

    def state_dict(self) -> dict[str, Any]:
        """Modules, optimisers, schedules, the generator and the value range. The value
        network keeps the key `critic` of the runs written before it left ALOE's learner."""
        return {
            **self.actor_opt.state_dict("actor"),
            **self.value_opt.state_dict("critic"),
            "generator": self.generator.get_state(),
            "v_range": [self.v_min, self.v_max],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Also reads checkpoints of runs written before; their unused target critic
        (`target_critic`) is ignored."""
        self.actor_opt.load_state_dict(state, "actor")
        self.value_opt.load_state_dict(state, "critic")
        self.generator.set_state(state["generator"].cpu())
        self.v_min, self.v_max = (float(v) for v in state["v_range"])


def build_learner(parts: LearnerParts[AwrConfig]) -> AwrLearner:
    """The actor and the distributional V(s) over Eq. 14's return range."""
    cfg = parts.cfg
    awr = parts.settings
    c_fail = cfg.env.c_fail or max(operator_episode_length(t) for t in task_list(cfg.task))
    dims = (parts.state_dim, parts.num_tasks, awr.num_bins)
    critic = value_critic(cfg.critic, *dims, parts.normalizer(), **parts.tokens)
    v_range = value_range(awr, c_fail, cfg.optim.gamma)
    return AwrLearner(parts.actor, critic, awr, v_range, cfg.optim, device=parts.device)


# One iteration: value steps on Monte-Carlo returns, then ALOE's weighted actor steps.

# metrics.jsonl column -> the learner metric it averages: ALOE's columns, read from V(s)
VALUE_METRICS = {
    "critic_loss": "value/loss",
    "q_mean": "value/v_mean",
    "critic_grad_norm": "value/grad_norm",
}
ACTOR_METRICS = {**aloe.ACTOR_METRICS, "q_pess_mean": "actor/return_mean"}


def update(ctx: UpdateContext[AwrConfig]) -> dict[str, float]:
    """awr.value_steps value steps, then awr.actor_steps weighted actor steps."""
    learner = ctx.learner_as(AwrLearner)
    own = ctx.settings
    k = ctx.iteration
    sampler = ctx.sampler(ctx.frames)
    value = ctx.steps(own.value_steps, learner.value_step, sampler, f"value[{k}]")
    actor = ctx.steps(own.actor_steps, learner.actor_step, sampler, f"actor[{k}]")
    row = {**step_means(value, VALUE_METRICS), "q_member_std": math.nan}  # one V(s): no spread
    row |= step_means(actor, ACTOR_METRICS)
    return {column: row[column] for column in aloe.UPDATE_COLUMNS}

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

from aloe.algos.aloe import AloeConfig, AloeLearner, advantage_weights
from aloe.critics.chunked_q import ChunkedQCritic, CriticConfig
from aloe.data import ChunkBatch
from aloe.nn import Normalizer, evaluating
from aloe.policies.base import Actor


@dataclass
class AwrConfig:
    """AWR's hyper-parameters; optimiser, batch size and γ are ALOE's (`aloe.*`), so the two
    differ only in the value they weight with."""

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

    def validate(self) -> None:
        """Raise ValueError naming the first field outside its allowed range."""
        checks: list[tuple[str, bool, str]] = [
            ("num_bins", self.num_bins >= 2, ">= 2"),
            ("v_min", self.v_min is None or self.v_min < self.v_max, "None or < v_max"),
            ("v_max", math.isfinite(self.v_max), "finite"),
            ("beta", self.beta > 0, "> 0"),
            ("eps_clip", self.eps_clip > 0, "> 0"),
            ("value_steps", self.value_steps >= 0, ">= 0"),
            ("actor_steps", self.actor_steps >= 0, ">= 0"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                value = getattr(self, name)
                raise ValueError(
                    f"config field awr.{name} = {value!r} is not allowed: must be {allowed}"
                )


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
        "critic/loss": float(loss.detach()),
        "critic/q_mean": float(v.mean()),  # same key as ALOE's critic, for the shared metrics
        "critic/v_abs_err": float((v - returns).abs().mean()),
        "critic/target_mean": float(returns.mean()),
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


class AwrLearner(AloeLearner):
    """ALOE's learner with the critic replaced by the distributional V(s).

    Optimisers, schedules, the generator, `bc_step` and checkpointing are ALOE's; the
    inherited target network is never used (Monte-Carlo targets need none).
    """

    def __init__(
        self,
        actor: Actor,
        critic: ChunkedQCritic,
        config: AloeConfig,
        awr: AwrConfig,
        v_range: tuple[float, float],
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(actor, critic, config, device)
        self.awr = awr
        self.v_min, self.v_max = v_range

    def value(self, state: Tensor, task_index: Tensor) -> Tensor:
        """V(s) (B,) from the distributional head."""
        return value_from_logits(self.critic(state, task_index), self.v_min, self.v_max)

    def critic_step(self, batch: ChunkBatch) -> dict[str, float]:
        """One cross-entropy update of the value on the batch's Monte-Carlo returns."""
        b = self._to_device(batch)
        self.critic.train()
        loss, metrics = value_loss(
            self.critic(b.state, b.task_index), b.mc_return, self.v_min, self.v_max
        )
        return self._update(
            loss, self.critic, self.critic_optim, self.critic_sched, "critic", metrics
        )

    def actor_weights(self, b: ChunkBatch) -> tuple[Tensor, dict[str, float]]:
        """The weights of the advantage-weighted flow-matching update, A = G_t − V(s_t)."""
        cfg = self.awr
        with torch.no_grad(), evaluating(self.critic):
            v = self.value(b.state, b.task_index)
        w, metrics = advantage_weights(  # Eq. 11 with A = G_t − V(s_t)
            b.mc_return, v, cfg.beta, cfg.eps_clip, cfg.normalize_advantage
        )
        metrics["actor/q_data_mean"] = float(b.mc_return.mean())
        metrics["actor/v_mean"] = float(v.mean())
        return w, metrics  # the update is ALOE's (Eq. 15)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "v_range": [self.v_min, self.v_max]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.v_min, self.v_max = (float(v) for v in state["v_range"])

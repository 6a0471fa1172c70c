"""The chunked action-value ensemble of ALOE (Sec. IV-C, Appendix C-2).

One transformer reads X = [q_1..q_K, s, x_1..x_V, a_1..a_h, ℓ] (x_v: camera v's frozen
image features through a trainable adapter, when the observation has cameras) and K independent MLP heads map
the K readout tokens to K scalar values Q_φ_i(s_t, a_{t:t+h}, ℓ): an ensemble in one
vectorised module, returning (K, B). The members share the backbone; they differ by their
readout tokens and heads, as in the paper. Built with action_dim = 0 and K = 1 it is the
state-only value network of the AWR baseline (Appendix C-3), which brings its own head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aloe.errors import require
from aloe.nn import (
    InstructionToken,
    Normalizer,
    ObservationTokens,
    accept_legacy_keys,
    transformer,
)


@dataclass
class CriticConfig:
    """Architecture of the chunked critic (defaults sized for 2 CPU cores; paper's in notes).

    Optimiser settings belong to the algorithm that trains it (`AloeConfig.critic_lr`);
    the chunk length h is the run's (`TrainConfig.horizon`), given to `ChunkedQCritic`.
    """

    num_q: int = 4
    """K, ensemble members. Not given in the paper; 4 makes min_i Q (Eq. 9) a tighter
    lower bound than a pair, and costs only 2 more tokens and heads on a shared backbone."""
    hidden_dim: int = 128
    """Token width D (paper: 256; halved for CPU)."""
    num_layers: int = 3
    """Transformer layers (paper: 6; halved for CPU)."""
    num_heads: int = 4
    """Attention heads per layer (paper: 8, i.e. 32 dims per head, kept here)."""
    mlp_ratio: int = 4
    """Feed-forward width as a multiple of hidden_dim."""
    head_hidden_dim: int = 128
    """Hidden width of each member's MLP head (paper: unspecified)."""
    dropout: float = 0.0
    """Dropout in the transformer and the state encoder."""

    def validate(self, prefix: str = "") -> None:
        """Raise UsageError naming the first field out of range, `critic.num_q (0): must be
        >= 1`; `prefix` leads the name ("config field " for a run's config)."""
        checks = [
            (name, getattr(self, name) >= 1, "must be >= 1")
            for name in (
                "num_q",
                "hidden_dim",
                "num_layers",
                "num_heads",
                "mlp_ratio",
                "head_hidden_dim",
            )
        ]
        checks += [
            (
                "hidden_dim",
                self.hidden_dim % self.num_heads == 0,
                f"must be a multiple of critic.num_heads ({self.num_heads})",
            ),
            ("dropout", 0 <= self.dropout < 1, "must be in [0, 1)"),
        ]
        for name, ok, allowed in checks:
            require(ok, f"{prefix}critic.{name}", getattr(self, name), allowed)


class EnsembleHead(nn.Module):
    """K independent MLPs D -> H -> 1, one per readout token, as batched matmuls."""

    def __init__(self, num_q: int, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(num_q, dim, hidden_dim))
        self.b1 = nn.Parameter(torch.empty(num_q, hidden_dim))
        self.w2 = nn.Parameter(torch.empty(num_q, hidden_dim))
        self.b2 = nn.Parameter(torch.empty(num_q))
        # nn.Linear's default init, drawn independently per member.
        for w, b, fan_in in ((self.w1, self.b1, dim), (self.w2, self.b2, hidden_dim)):
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(b, -bound, bound)

    def forward(self, z: Tensor) -> Tensor:
        """Readout tokens (B, K, D) -> values (K, B)."""
        x = F.gelu(torch.einsum("bkd,kdh->kbh", z, self.w1) + self.b1[:, None])
        return torch.einsum("kbh,kh->kb", x, self.w2) + self.b2[:, None]


class ChunkedQCritic(nn.Module):
    """Q_φ_i(s_t, a_{t:t+h}, ℓ) for i = 1..K over the sequence [q_1..q_K, s, a_1..a_h, ℓ]."""

    def __init__(
        self,
        config: CriticConfig,
        state_dim: int,
        action_dim: int,
        num_tasks: int,
        state_normalizer: Normalizer | None = None,
        head: nn.Module | None = None,
        obs_layout: tuple[int, ...] | None = None,
        instruction_features: Tensor | None = None,
        *,
        horizon: int = 0,
    ) -> None:
        """`horizon` is h, the actions per chunk (the actor's; paper: 50); a state-only
        critic (action_dim = 0) has none."""
        super().__init__()
        layout = obs_layout or (state_dim,)
        if sum(layout) != state_dim:
            raise ValueError(f"obs_layout {layout} does not add up to state_dim {state_dim}")
        if action_dim and horizon < 1:
            raise ValueError(f"a critic of action chunks needs horizon >= 1, got {horizon}")
        d = config.hidden_dim
        self.config = config
        self.num_q = config.num_q
        self.state_norm = state_normalizer or Normalizer(state_dim)
        self.q_tokens = nn.Parameter(0.02 * torch.randn(config.num_q, d))
        self.obs_encoder = ObservationTokens(layout, d, config.dropout)
        # Actions are in [-1, 1] already (env units), so they enter unnormalised.
        # action_dim = 0 builds the state-only variant (AWR's and PPO's V(s)): no action tokens.
        self.action_in = nn.Linear(action_dim, d) if action_dim else None
        self.action_pos = nn.Parameter(0.02 * torch.randn(horizon, d)) if action_dim else None
        self.instruction = InstructionToken(num_tasks, d, instruction_features)
        accept_legacy_keys(self)
        self.backbone = transformer(
            d, config.num_layers, config.num_heads, config.mlp_ratio, config.dropout
        )
        self.heads = (
            head if head is not None else EnsembleHead(config.num_q, d, config.head_hidden_dim)
        )

    def forward(
        self,
        state: Tensor,
        task_index: Tensor,
        actions: Tensor | None = None,
        valid: Tensor | None = None,
    ) -> Tensor:
        """Values (K, B) of chunks actions (B, h, A) at states (B, S) under instructions (B,).

        valid (B, h), 1.0 on executed steps: padded steps are removed from attention as
        keys, so their contents cannot change any value. None means all steps are valid.
        A custom `head` maps the readout tokens (B, K, D) to whatever it returns.
        """
        return self.heads(self.readout(state, task_index, actions, valid))

    def readout(
        self,
        state: Tensor,
        task_index: Tensor,
        actions: Tensor | None = None,
        valid: Tensor | None = None,
    ) -> Tensor:
        """The K readout tokens (B, K, D) after the transformer; actions None = state only."""
        b = state.shape[0]
        q = self.q_tokens.expand(b, -1, -1)
        obs = self.obs_encoder(self.state_norm.normalize(state))  # (B, 1 + V, D)
        tokens = [q, obs]
        h = 0
        if actions is not None:
            if self.action_in is None or self.action_pos is None:
                raise ValueError("this critic was built state-only (action_dim = 0)")
            h = actions.shape[1]
            tokens.append(self.action_in(actions) + self.action_pos[:h])
        tokens.append(self.instruction(task_index)[:, None])
        x = torch.cat(tokens, dim=1)
        padding = None
        if valid is not None and actions is not None:
            keep = torch.ones(b, x.shape[1], dtype=torch.bool, device=x.device)
            first = self.num_q + obs.shape[1]
            keep[:, first : first + h] = valid > 0.5
            padding = ~keep
        z = self.backbone(x, src_key_padding_mask=padding)
        return z[:, : self.num_q]

"""The chunked action-value ensemble of ALOE (Sec. IV-C, Appendix C-2), and the config of
every critic variant (`critic.*`; the MLP ensemble and the member stack: aloe.critics.ensemble).

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
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aloe.critics.hl_gauss import HLGauss
from aloe.errors import require
from aloe.nn import (
    InstructionToken,
    Normalizer,
    ObservationTokens,
    accept_legacy_keys,
    compilable,
    transformer,
)

Arch = Literal["transformer", "mlp"]
Members = Literal["shared", "independent"]
Loss = Literal["mse", "hl-gauss"]
StatsFrom = Literal["demo", "buffer"]
TIME_FEATURES = 2  # (policy steps used / time limit, steps since the fragment began / limit)


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
    # Variants (issue 32), read by ALOE's chunked Q only; AWR's and PPO's V(s) read the sizes
    # above. The defaults compute what the paper's critic computes.
    arch: Arch = "transformer"
    """transformer = the paper's (one sequence per chunk, K readout tokens); mlp = K
    independent MLPs with LayerNorm after each hidden layer over [normalised state, the
    chunk flattened (padded steps zeroed) with its valid mask, instruction embedding], as
    qc's critics (their `members` are always independent)."""
    members: Members = "shared"
    """Transformer members: shared = one backbone, K readout tokens and heads (the paper);
    independent = K whole networks (own encoders, backbone and head), K times the cost."""
    mlp_hidden_dim: int = 256
    """Width of each MLP member's hidden layers (qc: 512; halved for CPU)."""
    mlp_num_layers: int = 3
    """Hidden layers of each MLP member (qc: 4)."""
    loss: Loss = "mse"
    """Eq. 8's loss: mse = the paper's squared error on Q; hl-gauss = cross-entropy against
    the target smoothed over fixed bins, Q the expectation (aloe.critics.hl_gauss)."""
    num_bins: int = 101
    """HL-Gauss bins over [−(C_fail + 1/(1 − γ)), 0] (aloe.critics.hl_gauss)."""
    hl_sigma: float = 0.75
    """HL-Gauss smoothing std in bin widths (Farebrother et al.: 0.75)."""
    bootstrap: float = 1.0
    """p: each member trains on the batch rows of its own Bernoulli(p) mask (Eq. 8 per
    member over its rows), so members see different data; 1.0 = every row (the paper)."""
    normalizer: StatsFrom = "demo"
    """Statistics of the critic's state normaliser: demo = the successful demonstrations'
    (fitted at the warm start, shared with the actor); buffer = the whole buffer's, refitted
    before each iteration's critic steps."""
    z_clip: float = math.inf
    """Clip the normalised state to [−z_clip, z_clip] (inf: no clipping); states far from
    the statistics (a policy row at |z| ≈ 18 under demo statistics) stay in range."""
    time_features: bool = False
    """Give the critic the episode clock (aloe.data.episode_clock): policy steps used of the
    time limit and steps since the fragment began, both / env.max_steps; counters a real
    robot has too. Off: the state alone (the paper)."""

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
            ("arch", self.arch in get_args(Arch), "must be transformer or mlp"),
            ("members", self.members in get_args(Members), "must be shared or independent"),
            ("mlp_hidden_dim", self.mlp_hidden_dim >= 1, "must be >= 1"),
            ("mlp_num_layers", self.mlp_num_layers >= 1, "must be >= 1"),
            ("loss", self.loss in get_args(Loss), "must be mse or hl-gauss"),
            ("num_bins", self.num_bins >= 2, "must be >= 2"),
            ("hl_sigma", 0 < self.hl_sigma < math.inf, "must be finite and > 0"),
            ("bootstrap", 0 < self.bootstrap <= 1, "must be in (0, 1]"),
            ("normalizer", self.normalizer in get_args(StatsFrom), "must be demo or buffer"),
            ("z_clip", self.z_clip > 0, "must be > 0 (inf: no clipping)"),
        ]
        for name, ok, allowed in checks:
            require(ok, f"{prefix}critic.{name}", getattr(self, name), allowed)

    @property
    def outputs(self) -> int:
        """Numbers per member: 1 (Q) for mse, num_bins (logits) for hl-gauss."""
        return self.num_bins if self.loss == "hl-gauss" else 1


class EnsembleHead(nn.Module):
    """K independent MLPs D -> H -> 1, one per readout token, as batched matmuls."""

    def __init__(self, num_q: int, dim: int, hidden_dim: int, outputs: int = 1) -> None:
        """`outputs` > 1: O numbers per member (HL-Gauss logits), (K, B, O)."""
        super().__init__()
        out = () if outputs == 1 else (outputs,)
        self.w1 = nn.Parameter(torch.empty(num_q, dim, hidden_dim))
        self.b1 = nn.Parameter(torch.empty(num_q, hidden_dim))
        self.w2 = nn.Parameter(torch.empty(num_q, hidden_dim, *out))
        self.b2 = nn.Parameter(torch.empty(num_q, *out))
        # nn.Linear's default init, drawn independently per member.
        for w, b, fan_in in ((self.w1, self.b1, dim), (self.w2, self.b2, hidden_dim)):
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(b, -bound, bound)

    def forward(self, z: Tensor) -> Tensor:
        """Readout tokens (B, K, D) -> values (K, B), or (K, B, O) with O outputs."""
        x = F.gelu(torch.einsum("bkd,kdh->kbh", z, self.w1) + self.b1[:, None])
        return torch.einsum("kbh,kh...->kb...", x, self.w2) + self.b2[:, None]


class QEnsemble(nn.Module):
    """What every chunked Q ensemble has (the transformer below, aloe.critics.ensemble's
    MLP and member stack): values (K, B) from (state, task_index, actions, valid, time)."""

    config: CriticConfig
    num_q: int
    value_head: HLGauss | None
    """The HL-Gauss bins (`critic.loss = hl-gauss`), None for mse."""

    def raw(
        self,
        state: Tensor,
        task_index: Tensor,
        actions: Tensor | None = None,
        valid: Tensor | None = None,
        time: Tensor | None = None,
    ) -> Tensor:
        """Values (K, B), or HL-Gauss logits (K, B, O)."""
        raise NotImplementedError

    def forward(
        self,
        state: Tensor,
        task_index: Tensor,
        actions: Tensor | None = None,
        valid: Tensor | None = None,
        time: Tensor | None = None,
    ) -> Tensor:
        """Values (K, B) (the expectation over the bins for HL-Gauss)."""
        return to_values(self.value_head, self.raw(state, task_index, actions, valid, time))


class ChunkedQCritic(QEnsemble):
    """Q_φ_i(s_t, a_{t:t+h}, ℓ) for i = 1..K over the sequence [q_1..q_K, s, a_1..a_h, ℓ].
    `compiled` (`aloe.nn.set_compiled`) runs `raw` through torch.compile."""

    compiled: bool = False

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
        support: tuple[float, float] = (-1.0, 0.0),
    ) -> None:
        """`horizon` is h, the actions per chunk (the actor's; paper: 50); a state-only
        critic (action_dim = 0) has none. `support`: HL-Gauss's (v_min, v_max)
        (`hl_gauss.support_bounds`; a checkpoint restores the bins over a placeholder).
        Without a custom `head`, the config's variants apply: `loss`, `time_features`."""
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
        own = head is None
        self.heads = (
            head
            if head is not None
            else EnsembleHead(config.num_q, d, config.head_hidden_dim, config.outputs)
        )
        self.value_head = value_head(config, support) if own else None
        self.time_in = nn.Linear(TIME_FEATURES, d) if own and config.time_features else None

    @compilable
    def raw(
        self,
        state: Tensor,
        task_index: Tensor,
        actions: Tensor | None = None,
        valid: Tensor | None = None,
        time: Tensor | None = None,
    ) -> Tensor:
        """The heads' output for chunks actions (B, h, A) at states (B, S) under instructions
        (B,): values (K, B), or HL-Gauss logits (K, B, O).

        valid (B, h), 1.0 on executed steps: padded steps are removed from attention as
        keys, so their contents cannot change any value. None means all steps are valid.
        time (B, 2): the episode clock, for a critic with `time_features`. A custom `head`
        maps the readout tokens (B, K, D) to whatever it returns.
        """
        return self.heads(self.readout(state, task_index, actions, valid, time))

    def readout(
        self,
        state: Tensor,
        task_index: Tensor,
        actions: Tensor | None = None,
        valid: Tensor | None = None,
        time: Tensor | None = None,
    ) -> Tensor:
        """The K readout tokens (B, K, D) after the transformer; actions None = state only."""
        b = state.shape[0]
        q = self.q_tokens.expand(b, -1, -1)
        obs = self.obs_encoder(normalized(self.state_norm, state, self.config.z_clip))
        tokens = [q, obs]
        h = 0
        if actions is not None:
            if self.action_in is None or self.action_pos is None:
                raise ValueError("this critic was built state-only (action_dim = 0)")
            h = actions.shape[1]
            tokens.append(self.action_in(actions) + self.action_pos[:h])
        tokens.append(self.instruction(task_index)[:, None])
        if self.time_in is not None:
            tokens.append(self.time_in(require_time(time, b))[:, None])
        x = torch.cat(tokens, dim=1)
        padding = None
        if valid is not None and actions is not None:
            keep = torch.ones(b, x.shape[1], dtype=torch.bool, device=x.device)
            first = self.num_q + obs.shape[1]
            keep[:, first : first + h] = valid > 0.5
            padding = ~keep
        z = self.backbone(x, src_key_padding_mask=padding)
        return z[:, : self.num_q]


def value_head(config: CriticConfig, support: tuple[float, float]) -> HLGauss | None:
    """The HL-Gauss bins of a critic with `loss = hl-gauss`; None for mse."""
    if config.loss != "hl-gauss":
        return None
    return HLGauss(config.num_bins, *support, sigma_bins=config.hl_sigma)


def to_values(value_head: HLGauss | None, raw: Tensor) -> Tensor:
    """Values (K, B) from a critic's raw output: itself (mse), or the bins' expectation."""
    return raw if value_head is None else value_head.value(raw)


def normalized(norm: Normalizer, state: Tensor, z_clip: float) -> Tensor:
    """z = (s − mean) / std, clipped to ±z_clip when finite."""
    z = norm.normalize(state)
    return z if math.isinf(z_clip) else z.clamp(-z_clip, z_clip)


def require_time(time: Tensor | None, b: int) -> Tensor:
    """The episode clock (B, 2) a critic with `time_features` reads, checked."""
    if time is None or time.shape != (b, TIME_FEATURES):
        got = None if time is None else tuple(time.shape)
        raise ValueError(
            f"this critic reads the episode clock (critic.time_features): pass time of shape "
            f"({b}, {TIME_FEATURES}), got {got}"
        )
    return time

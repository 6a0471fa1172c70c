"""The critic variants besides the paper's shared transformer (`critic.arch`, `critic.members`),
and `build_critic`, which picks one from the config.

Every variant is one module returning (K, B) values from (state, task_index, actions, valid,
time), with `raw` (values, or HL-Gauss logits (K, B, O)), `value_head`, `config` and
`num_q`: the learner treats them alike.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aloe.critics.chunked_q import (
    TIME_FEATURES,
    ChunkedQCritic,
    CriticConfig,
    QEnsemble,
    normalized,
    require_time,
    value_head,
)
from aloe.nn import InstructionToken, Normalizer, compilable

INSTRUCTION_DIM = 32  # the MLP's instruction embedding (a learned table, or a projection)


class MlpQCritic(QEnsemble):
    """K independent MLPs, as qc's critics: [z(s), a_{t:t+h} flattened, valid, ℓ (, clock)]
    -> (Linear -> LayerNorm -> GELU) × L -> Linear, vectorised over the members.

    Padded steps are zeroed and the valid mask is an input, so their contents cannot change
    a value and a chunk cut to n steps is told apart from a full one. `compiled`
    (`aloe.nn.set_compiled`) runs `raw` through torch.compile."""

    compiled: bool = False

    def __init__(
        self,
        config: CriticConfig,
        state_dim: int,
        action_dim: int,
        num_tasks: int,
        state_normalizer: Normalizer | None = None,
        instruction_features: Tensor | None = None,
        *,
        horizon: int,
        support: tuple[float, float] = (-1.0, 0.0),
    ) -> None:
        super().__init__()
        if horizon < 1 or action_dim < 1:
            raise ValueError(f"an MLP critic needs horizon, action_dim >= 1, got {horizon}")
        k = config.num_q
        hid = config.mlp_hidden_dim
        self.config = config
        self.num_q = k
        self.horizon = horizon
        self.state_norm = state_normalizer or Normalizer(state_dim)
        self.instruction = InstructionToken(num_tasks, INSTRUCTION_DIM, instruction_features)
        width = state_dim + horizon * (action_dim + 1) + INSTRUCTION_DIM
        width += TIME_FEATURES if config.time_features else 0
        sizes = [width] + [hid] * config.mlp_num_layers
        self.weights = nn.ParameterList(
            [_members_linear(k, i, o) for i, o in zip(sizes[:-1], sizes[1:], strict=True)]
        )
        self.biases = nn.ParameterList([nn.Parameter(torch.zeros(k, o)) for o in sizes[1:]])
        self.norm_scale = nn.ParameterList([nn.Parameter(torch.ones(k, hid)) for _ in sizes[1:]])
        self.norm_shift = nn.ParameterList([nn.Parameter(torch.zeros(k, hid)) for _ in sizes[1:]])
        self.out_w = _members_linear(k, hid, config.outputs)
        self.out_b = nn.Parameter(torch.zeros(k, config.outputs))
        self.value_head = value_head(config, support)

    @compilable
    def raw(
        self,
        state: Tensor,
        task_index: Tensor,
        actions: Tensor | None = None,
        valid: Tensor | None = None,
        time: Tensor | None = None,
    ) -> Tensor:
        """Values (K, B), or HL-Gauss logits (K, B, O); arguments as `ChunkedQCritic`'s."""
        if actions is None:
            raise ValueError("an MLP critic scores action chunks: actions is required")
        b, h = actions.shape[:2]
        mask = actions.new_ones(b, h) if valid is None else valid.to(actions.dtype)
        parts = [
            normalized(self.state_norm, state, self.config.z_clip),
            (actions * mask[..., None]).flatten(1),
            mask,
            self.instruction(task_index),
        ]
        if self.config.time_features:
            parts.append(require_time(time, b))
        x = torch.cat(parts, dim=1).expand(self.num_q, -1, -1)  # (K, B, in)
        for w, bias, scale, shift in zip(
            self.weights, self.biases, self.norm_scale, self.norm_shift, strict=True
        ):
            x = torch.baddbmm(bias[:, None], x, w)
            x = F.layer_norm(x, x.shape[-1:]) * scale[:, None] + shift[:, None]
            x = F.gelu(x)
        out = torch.baddbmm(self.out_b[:, None], x, self.out_w)  # (K, B, O)
        return out[..., 0] if self.config.outputs == 1 else out


def _members_linear(k: int, fan_in: int, fan_out: int) -> nn.Parameter:
    """K weight matrices (K, in, out), each with nn.Linear's default init."""
    bound = 1.0 / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(k, fan_in, fan_out).uniform_(-bound, bound))


class MemberStack(QEnsemble):
    """K whole transformer critics of one member each (`critic.members = independent`):
    own encoders, backbone, readout token and head; their values stacked to (K, B)."""

    def __init__(
        self, config: CriticConfig, build: Callable[[CriticConfig], ChunkedQCritic]
    ) -> None:
        super().__init__()
        one = dataclasses.replace(config, num_q=1)
        self.config = config
        self.num_q = config.num_q
        self.stack = [build(one) for _ in range(config.num_q)]
        self.members = nn.ModuleList(self.stack)
        self.value_head = self.stack[0].value_head

    def raw(
        self,
        state: Tensor,
        task_index: Tensor,
        actions: Tensor | None = None,
        valid: Tensor | None = None,
        time: Tensor | None = None,
    ) -> Tensor:
        """Values (K, B), or HL-Gauss logits (K, B, O): each member's, stacked."""
        return torch.cat([m.raw(state, task_index, actions, valid, time) for m in self.stack])


def build_critic(
    config: CriticConfig,
    state_dim: int,
    action_dim: int,
    num_tasks: int,
    normalizer: Callable[[], Normalizer],
    *,
    horizon: int,
    obs_layout: tuple[int, ...] | None = None,
    instruction_features: Tensor | None = None,
    support: tuple[float, float] = (-1.0, 0.0),
) -> QEnsemble:
    """ALOE's chunked Q ensemble of `config.arch` and `config.members`; `normalizer` makes a
    fresh state normaliser (one per network); `support` as `ChunkedQCritic`'s."""
    if config.arch == "mlp":
        return MlpQCritic(
            config,
            state_dim,
            action_dim,
            num_tasks,
            normalizer(),
            instruction_features,
            horizon=horizon,
            support=support,
        )

    def transformer(cfg: CriticConfig) -> ChunkedQCritic:
        return ChunkedQCritic(
            cfg,
            state_dim,
            action_dim,
            num_tasks,
            normalizer(),
            obs_layout=obs_layout,
            instruction_features=instruction_features,
            horizon=horizon,
            support=support,
        )

    if config.members == "independent" and config.num_q > 1:
        return MemberStack(config, transformer)
    return transformer(config)


def refit_normalizers(critic: nn.Module, mean: Tensor, std: Tensor) -> None:
    """Set every state normaliser of `critic` (one per member network) to these statistics,
    as `Normalizer.from_stats` would build them."""
    fitted = Normalizer.from_stats(mean, std)
    for module in critic.modules():
        if isinstance(module, Normalizer):
            module.mean.copy_(fitted.mean.to(module.mean.device))
            module.std.copy_(fitted.std.to(module.std.device))

"""Small building blocks shared by the actor and the critic."""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Normalizer(nn.Module):
    """Affine feature normaliser, x -> (x - mean) / std, with its statistics as buffers.

    The statistics live in buffers (not parameters) so they travel with `state_dict`, move
    with `.to(device)`, and are never touched by an optimiser. `Normalizer(dim)` is the
    identity; build one from dataset statistics with `from_stats`.
    """

    mean: Tensor
    std: Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @classmethod
    def from_stats(cls, mean: Tensor, std: Tensor, eps: float = 1e-6) -> Normalizer:
        """A normaliser from per-feature statistics (1-D tensors or array-likes).

        Features whose std is below `eps` are only centred (std set to 1): a feature that is
        constant in the data (a fixed goal, an unused slot) must not explode when it moves
        at test time.
        """
        mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean_t.shape != std_t.shape:
            raise ValueError(f"mean {tuple(mean_t.shape)} and std {tuple(std_t.shape)} differ")
        norm = cls(mean_t.numel())
        norm.mean.copy_(mean_t)
        norm.std.copy_(torch.where(std_t < eps, torch.ones_like(std_t), std_t))
        return norm

    def normalize(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def unnormalize(self, x: Tensor) -> Tensor:
        return x * self.std + self.mean


def sinusoidal_embedding(
    t: Tensor, dim: int, min_period: float = 4e-3, max_period: float = 4.0
) -> Tensor:
    """Sine-cosine embedding (B,) -> (B, dim) of a scalar in about [0, 1] (flow time η).

    The periods span [min_period, max_period] geometrically (as in π0), so both the coarse
    position in [0, 1] and differences of one Euler step (0.1) are resolved.
    """
    if dim % 2:
        raise ValueError(f"embedding dim must be even, got {dim}")
    fraction = torch.linspace(0.0, 1.0, dim // 2, device=t.device, dtype=torch.float32)
    period = min_period * (max_period / min_period) ** fraction
    angle = t.float()[:, None] * (2.0 * math.pi / period)[None, :]
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)


def mlp(
    in_dim: int, hidden_dim: int, out_dim: int, num_hidden: int = 1, dropout: float = 0.0
) -> nn.Sequential:
    """Linear-GELU stack with `num_hidden` hidden layers of width `hidden_dim`."""
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_hidden):
        layers += [nn.Linear(dim, hidden_dim), nn.GELU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*layers)


def transformer(
    dim: int, num_layers: int, num_heads: int, mlp_ratio: int, dropout: float
) -> nn.TransformerEncoder:
    """A pre-norm transformer encoder over (B, L, dim) sequences, ending in a LayerNorm."""
    layer = nn.TransformerEncoderLayer(
        dim,
        num_heads,
        dim_feedforward=mlp_ratio * dim,
        dropout=dropout,
        activation="gelu",
        batch_first=True,
        norm_first=True,
    )
    # Pre-norm layers cannot use the nested-tensor fast path; saying so silences a warning.
    return nn.TransformerEncoder(
        layer, num_layers, norm=nn.LayerNorm(dim), enable_nested_tensor=False
    )


class FixedPrefix:
    """A `transformer` in eval mode run on [prefix, suffix] for many suffixes after one
    prefix (the flow's Euler steps: the condition tokens, then each step's action tokens).
    What no suffix changes is done once, here: the layers' weights looked up and the
    prefix's first-layer queries, keys and values computed. `fp(suffix)` is
    `backbone(cat([prefix, suffix], 1))[:, C:]` to float rounding; its last layer attends,
    feeds forward and normalises the suffix tokens alone, as nothing reads the prefix's."""

    def __init__(self, backbone: nn.TransformerEncoder, prefix: Tensor) -> None:
        self.prefix = prefix
        self.layers = [_PreNormLayer(layer) for layer in backbone.layers]
        norm = cast(nn.LayerNorm | None, backbone.norm)
        self.norm = None if norm is None else _norm_args(norm)
        self.first_qkv = self.layers[0].qkv(prefix)

    def __call__(self, suffix: Tensor) -> Tensor:
        c = self.prefix.shape[1]
        x = torch.cat([self.prefix, suffix], dim=1)
        for i, layer in enumerate(self.layers):
            qkv = (
                torch.cat([self.first_qkv, layer.qkv(suffix)], dim=1)  # the prefix's: once
                if i == 0
                else layer.qkv(x)
            )
            keep = c if i == len(self.layers) - 1 else 0
            x = layer.rest(x[:, keep:], qkv, keep)
        return x if self.norm is None else F.layer_norm(x, *self.norm)


def _norm_args(norm: nn.LayerNorm) -> tuple[Any, ...]:
    return (norm.normalized_shape, norm.weight, norm.bias, norm.eps)


class _PreNormLayer:
    """An `nn.TransformerEncoderLayer` of `transformer` (pre-norm) in eval mode, its weights
    held as tensors: no module calls or attribute look-ups per use."""

    def __init__(self, layer: nn.TransformerEncoderLayer) -> None:
        attn = layer.self_attn
        self.heads = attn.num_heads
        self.norm1 = _norm_args(layer.norm1)
        self.in_proj = (attn.in_proj_weight, attn.in_proj_bias)
        self.out_proj = (attn.out_proj.weight, attn.out_proj.bias)
        self.norm2 = _norm_args(layer.norm2)
        self.linear1 = (layer.linear1.weight, layer.linear1.bias)
        self.linear2 = (layer.linear2.weight, layer.linear2.bias)
        self.activation = layer.activation

    def qkv(self, x: Tensor) -> Tensor:
        """Queries, keys and values (B, L, 3D) of tokens x (B, L, D)."""
        return F.linear(F.layer_norm(x, *self.norm1), *self.in_proj)

    def rest(self, x: Tensor, qkv: Tensor, keep: int) -> Tensor:
        """The layer's output for the tokens x (B, L - keep, D) given every token's q, k, v
        (B, L, 3D): attention from the kept tokens' queries, then the feed-forward."""
        d = x.shape[-1]
        q, k, v = qkv.unflatten(-1, (3, self.heads, d // self.heads)).permute(2, 0, 3, 1, 4)
        mixed = F.scaled_dot_product_attention(q[:, :, keep:], k, v).transpose(1, 2).flatten(2)
        x = x + F.linear(mixed, *self.out_proj)
        hidden = self.activation(F.linear(F.layer_norm(x, *self.norm2), *self.linear1))
        return x + F.linear(hidden, *self.linear2)


P = ParamSpec("P")
R = TypeVar("R")
M = TypeVar("M", bound=nn.Module)


def compilable(method: Callable[Concatenate[M, P], R]) -> Callable[Concatenate[M, P], R]:
    """A module's method run through `torch.compile` while the module's `compiled` is on
    (`set_compiled`; a new input shape compiles again), else eagerly. Where compiling fails
    (no C++ compiler, a platform torch.compile does not support) one warning says so and the
    method runs eagerly from then on; an error of the method itself is raised as eager."""
    compiled: list[Callable[..., R]] = []
    failed: list[str] = []

    @functools.wraps(method)
    def call(self: M, *args: P.args, **kwargs: P.kwargs) -> R:
        if not getattr(self, "compiled", False) or failed:
            return method(self, *args, **kwargs)
        try:
            if not compiled:
                compiled.append(torch.compile(method))
            return compiled[0](self, *args, **kwargs)
        except Exception as e:  # the eager call below raises the method's own errors
            out = method(self, *args, **kwargs)
            failed.append(f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200]}")
            warnings.warn(
                f"torch.compile of {method.__qualname__} failed ({failed[0]}); it runs "
                "eagerly from now on",
                RuntimeWarning,
                stacklevel=2,
            )
            return out

    return call


def set_compiled(on: bool, *modules: Any) -> None:
    """Turn `torch.compile` on or off for every module among `modules` and their submodules
    that has `compilable` methods (a class attribute `compiled`); other objects are skipped."""
    for module in modules:
        if isinstance(module, nn.Module):
            for sub in module.modules():
                if hasattr(type(sub), "compiled"):
                    cast(Any, sub).compiled = on


@contextmanager
def evaluating(*modules: nn.Module) -> Iterator[None]:
    """Put modules in eval mode (no dropout) for the block, then restore their modes."""
    modes = [m.training for m in modules]
    try:
        for m in modules:
            m.eval()
        yield
    finally:
        for m, mode in zip(modules, modes, strict=True):
            m.train(mode)


# Conditioning shared by the actor and the critic: the observation vector is laid out as
# [state | camera_1 features | ... | camera_V features] (`layout` gives each segment's width;
# image features come from a frozen encoder, see aloe.vision), the instruction as a row index.


class ObservationTokens(nn.Module):
    """Observation vector (B, sum(layout)) -> tokens (B, 1 + V, D): the state through an
    MLP, each camera's frozen features through its own trainable adapter (an MLP)."""

    def __init__(self, layout: tuple[int, ...], dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        if not layout or min(layout) < 1:
            raise ValueError(f"observation layout {layout}: every segment must be >= 1 wide")
        self.layout = tuple(layout)
        self.state = mlp(layout[0], dim, dim, num_hidden=1, dropout=dropout)
        self.cameras = nn.ModuleList(mlp(f, dim, dim, num_hidden=1) for f in layout[1:])

    @property
    def num_tokens(self) -> int:
        return len(self.layout)

    def forward(self, x: Tensor) -> Tensor:
        parts = torch.split(x, list(self.layout), dim=-1)
        tokens = [self.state(parts[0])]
        tokens += [adapter(p) for adapter, p in zip(self.cameras, parts[1:], strict=True)]
        return torch.stack(tokens, dim=1)


class InstructionToken(nn.Module):
    """Task index (B,) -> instruction token (B, D).

    Without `features`, a learned embedding per instruction; with frozen sentence embeddings
    `features` (num_tasks, E) (aloe.vision.language), a trainable projection of them, so the
    instruction text itself is what tells tasks apart.
    """

    features: Tensor

    def __init__(self, num_tasks: int, dim: int, features: Tensor | None = None) -> None:
        super().__init__()
        self.num_tasks = num_tasks
        if features is None:
            self.embedding: nn.Module = nn.Embedding(num_tasks, dim)
        else:
            if features.shape[0] != num_tasks:
                raise ValueError(
                    f"{features.shape[0]} instruction embeddings for {num_tasks} tasks"
                )
            self.register_buffer("features", features.float().clone())
            self.embedding = nn.Linear(features.shape[1], dim)

    def forward(self, task_index: Tensor) -> Tensor:
        if isinstance(self.embedding, nn.Embedding):
            return self.embedding(task_index)
        return self.embedding(self.features[task_index])


# Checkpoints written before camera and instruction tokens (aloe < 0.2) name the state and
# instruction encoders differently; they load into today's modules unchanged.
_LEGACY_KEYS = {"state_encoder.": "obs_encoder.state.", "task_embedding.": "instruction.embedding."}


def accept_legacy_keys(module: nn.Module) -> None:
    """Let `module.load_state_dict` read checkpoints with the pre-0.2 key names."""

    def rename(state_dict: dict[str, Tensor], prefix: str, *args: object) -> None:
        for key in [k for k in state_dict if k.startswith(prefix)]:
            for old, new in _LEGACY_KEYS.items():
                if key.startswith(prefix + old):
                    state_dict[prefix + new + key[len(prefix + old) :]] = state_dict.pop(key)

    module._register_load_state_dict_pre_hook(rename)


def resolve_device(name: str) -> torch.device:
    """A config's device name as a torch device; "auto" is CUDA where there is one."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)

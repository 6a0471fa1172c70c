"""What a valid config asks of this machine, checked before any work: its device exists, and
an update's activations fit the device's memory (`check_machine`, called by `aloe.train`)."""

from __future__ import annotations

import os
from typing import Any

import torch

from aloe.algos.table import ALGORITHMS
from aloe.config import TrainConfig
from aloe.config_json import FIELD
from aloe.errors import UsageError, require
from aloe.nn import resolve_device


def check_machine(cfg: TrainConfig) -> None:
    """What a valid config asks of this machine, before any work: its device exists, and
    the largest activation of an update (`activation_bytes`) fits the device's memory."""
    device = _available_device(cfg.device)
    need, fields = activation_bytes(cfg)
    have = memory_bytes(device)
    if need > have:
        values = ", ".join(str(_get(cfg, f)) for f in fields)
        raise UsageError(
            f"{FIELD}{' and '.join(fields)} ({values}): an update would need "
            f"about {_gb(need)} of activations, more than the {_gb(have)} of "
            f"memory of this {device.type}; lower them"
        )


def _available_device(name: str) -> torch.device:
    device = resolve_device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        require(
            count > 0,
            f"{FIELD}device",
            name,
            f"this torch ({torch.__version__}) sees no CUDA device; use --device cpu or auto",
        )
        require(
            (device.index or 0) < count,
            f"{FIELD}device",
            name,
            f"this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}",
        )
    if device.type == "mps":
        require(
            torch.backends.mps.is_available(),
            f"{FIELD}device",
            name,
            "MPS is not available here; use --device cpu or auto",
        )
    return device


def activation_bytes(cfg: TrainConfig) -> tuple[int, tuple[str, ...]]:
    """A rough upper estimate of the memory an update's largest activations take, and the
    fields that set it (the batch size and the horizon).

    A transformer layer keeps for backward, per sample, ~(6 + mlp_ratio)·T·D floats (q, k, v,
    attention output, two residual streams, the MLP's hidden layer) and 2·H·T² (attention
    scores and probabilities), T the tokens (horizon + observation, instruction and readout
    tokens), D the width, H the heads; over L layers, × 4 bytes, × 2 for their gradients and
    the allocator's slack. V^π (Eq. 10) runs the critic without gradient on M chunks per
    state: one layer at a time, M·B samples. The paper preset comes to ~2.4 GB, the default
    to ~0.03 GB (1.9 GB at horizon 300, 18 GB at 1000); a horizon of 10⁵ or a batch of 10⁸
    asks for terabytes and is refused before anything is allocated.
    """
    views = 1 + (len(cfg.vision.cameras) if cfg.obs == "image" else 0)
    row = ALGORITHMS[cfg.algo]
    batch, batch_field = row.update_batch(cfg.optim, row.settings(cfg))
    samples = max(1, row.samples_per_row(row.settings(cfg)))
    need = 0
    for net, tokens in (
        (cfg.critic, cfg.critic.num_q + views + cfg.horizon + 1),
        (cfg.actor, views + 1 + cfg.horizon),
    ):
        per_layer = (6 + net.mlp_ratio) * tokens * net.hidden_dim + 2 * net.num_heads * tokens**2
        need = max(need, batch * per_layer * 4 * 2 * max(net.num_layers, samples))
    return need, (batch_field, "horizon")


def memory_bytes(device: torch.device) -> int:
    """A GPU's memory, else the machine's physical memory (os.sysconf)."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _gb(n: int) -> str:
    return f"{n / 1e9:.3g} GB" if n < 1e12 else f"{n / 1e12:.3g} TB"

"""One optimised module: a network with its AdamW, schedule, gradient clip and divergence guard.

Every learner (ALOE, AWR, PPO+SBC and, through ALOE's, BC and HG-DAgger) is composed of
these, one per network it trains: `step(loss, metrics, prefix)` is one update of it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from aloe.data import ChunkBatch
from aloe.distributed.shard import all_reduce_grads


class OptimiserSettings(Protocol):
    """The optimiser fields of a config (`AloeConfig` has them: every algorithm shares them)."""

    adam_betas: tuple[float, float]
    weight_decay: float
    grad_clip: float
    warmup_steps: int
    decay_steps: int
    min_lr_ratio: float
    q_abs_max: float


_VALUE_METRICS = ("q_", "target_", "v_")


def check_finite(metrics: Mapping[str, float], q_abs_max: float = math.inf) -> None:
    """Raise FloatingPointError naming the first metric that is NaN/inf, or a value metric
    (q_*, target_*, v_*) whose magnitude exceeds q_abs_max: training has diverged."""
    for key, value in metrics.items():
        if not math.isfinite(value):
            raise FloatingPointError(f"metric {key!r} is {value}: the update diverged")
        name = key.rpartition("/")[2]
        if name.startswith(_VALUE_METRICS) and abs(value) > q_abs_max:
            raise FloatingPointError(
                f"metric {key!r} = {value:.6g} exceeds q_abs_max = {q_abs_max:g}: "
                "the critic is diverging (check rewards, γ and the learning rate)"
            )


def warmup_cosine(warmup_steps: int, decay_steps: int, min_ratio: float) -> Callable[[int], float]:
    """LR factor: linear warm-up to 1, cosine down to min_ratio at decay_steps, then flat."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, decay_steps - warmup_steps))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


class OptimisedModule:
    """`module` trained by AdamW at peak rate `lr` on a warm-up + cosine schedule, its
    gradient norm clipped, every update's metrics checked before the weights move."""

    def __init__(self, module: nn.Module, lr: float, cfg: OptimiserSettings) -> None:
        self.module = module
        self.optim = torch.optim.AdamW(
            module.parameters(), lr=lr, betas=cfg.adam_betas, weight_decay=cfg.weight_decay
        )
        factor = warmup_cosine(cfg.warmup_steps, cfg.decay_steps, cfg.min_lr_ratio)
        self.sched = LambdaLR(self.optim, factor)
        self.grad_clip, self.q_abs_max = cfg.grad_clip, cfg.q_abs_max

    def step(self, loss: Tensor, metrics: dict[str, float], prefix: str) -> dict[str, float]:
        """Backward, clip, guard, step; adds `prefix/grad_norm` and `prefix/lr` to metrics.
        Raises before stepping, so the weights never hold NaN."""
        self.optim.zero_grad(set_to_none=True)
        loss.backward()
        all_reduce_grads(self.module.parameters())  # several learner processes: their mean
        grad_norm = nn.utils.clip_grad_norm_(self.module.parameters(), self.grad_clip)
        metrics[f"{prefix}/grad_norm"] = float(grad_norm)
        metrics[f"{prefix}/lr"] = float(self.sched.get_last_lr()[0])
        check_finite(metrics, self.q_abs_max)
        self.optim.step()
        self.sched.step()
        return metrics

    def set_peak_lr(self, lr: float) -> None:
        """Make `lr` the peak rate from now on (the schedule's position is kept)."""
        self.sched.base_lrs = [lr for _ in self.sched.base_lrs]
        factor = self.sched.lr_lambdas[0](self.sched.last_epoch)
        for group in self.optim.param_groups:
            group["lr"] = lr * factor

    def state_dict(self, name: str) -> dict[str, Any]:
        """The module, optimiser and schedule under `name`, `name_optim`, `name_sched`.

        A module with a `checkpoint_state()` (a VLA whose frozen weights are a pretrained
        checkpoint's, `LeRobotActor`) gives that instead of its whole state_dict, and reads
        it back with `load_checkpoint_state`.
        """
        module = getattr(self.module, "checkpoint_state", self.module.state_dict)()
        return {
            name: module,
            f"{name}_optim": self.optim.state_dict(),
            f"{name}_sched": self.sched.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any], name: str) -> None:
        getattr(self.module, "load_checkpoint_state", self.module.load_state_dict)(state[name])
        self.optim.load_state_dict(state[f"{name}_optim"])
        self.sched.load_state_dict(state[f"{name}_sched"])


def to_device(batch: ChunkBatch, device: torch.device) -> ChunkBatch:
    return batch.to(device)

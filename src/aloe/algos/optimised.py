"""What every learner shares: its settings (`OptimConfig`, the run's `optim.*` group) and
one optimised module, a network with its AdamW, schedule, gradient clip and divergence guard.

Every learner (ALOE, AWR, PPO+SBC and, through ALOE's, BC and HG-DAgger) is composed of
these, one per network it trains: `step(loss, metrics, prefix)` is one update of it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from aloe.data import ChunkBatch
from aloe.errors import require
from aloe.shard import all_reduce_grads


@dataclass
class OptimConfig:
    """What every algorithm's learner shares (`--optim.*`): the optimiser and its schedule,
    the minibatch, γ, the divergence guard and the learner's generator. "Paper" gives
    Appendix C's value; "open" marks a choice the paper leaves to us."""

    batch_size: int = 256
    """Chunks per minibatch of every update, the BC warm start's included (paper)."""
    gamma: float = 0.99
    """γ (paper). The sampler uses it to build `reward` and `discount` = γ^n of a batch."""
    critic_lr: float = 3e-4
    """Peak learning rate of the value network: ALOE's critic ensemble, AWR's and PPO's
    V(s) (paper: 3e-5 on a 256-wide critic over frozen SigLIP; a small critic from scratch
    wants more)."""
    actor_lr: float = 3e-4
    """Peak actor learning rate, the BC warm start's included (open: the paper fine-tunes
    π0.5; this actor is small)."""
    weight_decay: float = 1e-4
    """AdamW weight decay of every optimiser (open)."""
    adam_betas: tuple[float, float] = (0.9, 0.95)
    """AdamW (β1, β2) (paper)."""
    grad_clip: float = 1.0
    """Global gradient-norm clip of every update (paper)."""
    warmup_steps: int = 100
    """Linear warm-up steps of the cosine schedule (paper)."""
    decay_steps: int = 50_000
    """Steps from the start to the end of the cosine, after which the rate stays at
    min_lr_ratio × peak; counted per optimiser over the whole run (open)."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of the peak (open)."""
    q_abs_max: float = 1e4
    """`check_finite` raises past this |value| (Q, V, TD target): ~10× the largest |Q|
    Eq. 14 allows; inf = no bound (NaN and inf metrics still stop the run)."""
    seed: int = 0
    """Seed of the learner's generator (flow noise, η, sampled chunks) until the trainer
    reseeds it for an iteration's update."""

    def validate(self, prefix: str = "") -> None:
        """Raise UsageError naming the first field out of range, `optim.gamma (0.0): must be
        in (0, 1]`; `prefix` leads the name ("config field " for a run's config)."""
        checks: list[tuple[str, bool, str]] = [
            ("batch_size", self.batch_size >= 1, "must be >= 1"),
            ("gamma", 0 < self.gamma <= 1, "must be in (0, 1]"),
            ("critic_lr", self.critic_lr > 0, "must be > 0"),
            ("actor_lr", self.actor_lr > 0, "must be > 0"),
            ("weight_decay", self.weight_decay >= 0, "must be >= 0"),
            (
                "adam_betas",
                len(self.adam_betas) == 2 and all(0 <= b < 1 for b in self.adam_betas),
                "must be two values in [0, 1)",
            ),
            ("grad_clip", self.grad_clip > 0, "must be > 0"),
            ("warmup_steps", self.warmup_steps >= 0, "must be >= 0"),
            (
                "decay_steps",
                self.decay_steps >= self.warmup_steps,
                f"must be >= warmup_steps ({self.warmup_steps})",
            ),
            ("min_lr_ratio", 0 <= self.min_lr_ratio <= 1, "must be in [0, 1]"),
            ("q_abs_max", self.q_abs_max > 0, "must be > 0 (inf = no bound)"),
            ("seed", self.seed >= 0, "must be >= 0"),
        ]
        for name, ok, allowed in checks:
            require(ok, f"{prefix}optim.{name}", getattr(self, name), allowed)


def optim_preset(name: str) -> OptimConfig:
    """The shared settings of preset `name` (smoke | default | paper | mt10)."""
    if name == "smoke":  # seconds on 2 cores
        return OptimConfig(batch_size=32, warmup_steps=5)
    if name in ("default", "mt10"):
        return OptimConfig(batch_size=128)
    if name == "paper":  # Appendix C
        return OptimConfig(batch_size=256, gamma=0.99, critic_lr=3e-5, warmup_steps=100)
    return OptimConfig()


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

    def __init__(self, module: nn.Module, lr: float, cfg: OptimConfig) -> None:
        self.module = module
        self.optim = torch.optim.AdamW(
            module.parameters(), lr=lr, betas=cfg.adam_betas, weight_decay=cfg.weight_decay
        )
        factor = warmup_cosine(cfg.warmup_steps, cfg.decay_steps, cfg.min_lr_ratio)
        self.sched = LambdaLR(self.optim, factor)
        self.grad_clip = cfg.grad_clip
        self.q_abs_max = cfg.q_abs_max

    @property
    def updates(self) -> int:
        """Updates applied so far (the schedule's position; checkpointed with it)."""
        return int(self.sched.last_epoch)

    def step(self, loss: Tensor, metrics: dict[str, float], prefix: str) -> dict[str, float]:
        """Backward, clip, guard, step; adds `prefix/grad_norm` and `prefix/lr` to metrics.
        Raises before stepping, so the weights never hold NaN."""
        self.backward(loss)
        return self.apply(metrics, prefix)

    def backward(self, loss: Tensor) -> None:
        """The first half of `step`: the loss's gradients, from zero."""
        self.optim.zero_grad(set_to_none=True)
        loss.backward()

    def apply(self, metrics: dict[str, float], prefix: str) -> dict[str, float]:
        """The second half of `step`: average, clip, guard, then AdamW and the schedule."""
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

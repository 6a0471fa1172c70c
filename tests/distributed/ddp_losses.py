"""Run by tests/distributed/test_ddp.py: a few BC, critic and actor steps of the smoke
preset's ALOE learner on synthetic batches, on one process or under torchrun (gloo).
Writes the losses of every step (the global batch's, on rank 0) as JSON to argv[1]."""

from __future__ import annotations

import json
import sys

import torch

from aloe.algos.context import UpdateContext
from aloe.config import preset
from aloe.data import ChunkBatch
from aloe.run import build_learner

STEPS = 4


class Batches:
    """A sampler of synthetic chunk batches, the same on every rank (one seeded generator)."""

    def __init__(self, state_dim: int, horizon: int) -> None:
        self.gen, self.s, self.h = torch.Generator().manual_seed(7), state_dim, horizon

    def sample(self, b: int) -> ChunkBatch:
        g, s, h = self.gen, self.s, self.h
        return ChunkBatch(
            state=torch.randn(b, s, generator=g),
            actions=torch.rand(b, h, 4, generator=g) * 2 - 1,
            valid=torch.ones(b, h),
            reward=-torch.rand(b, generator=g) * 5,
            next_state=torch.randn(b, s, generator=g),
            discount=torch.full((b,), 0.9),
            bootstrap=(torch.rand(b, generator=g) > 0.1).float(),
            mc_return=torch.zeros(b),
            task_index=torch.zeros(b, dtype=torch.long),
            source=torch.zeros(b, dtype=torch.long),
            global_index=torch.arange(b),
        )


def losses() -> dict[str, list[float]]:
    torch.manual_seed(0)
    cfg = preset("smoke").resolved()
    cfg.progress = False
    learner = build_learner(cfg)
    ctx = UpdateContext(cfg, cfg.aloe, 1, None, learner, sampler=None)  # type: ignore[arg-type]
    batches = Batches(39, cfg.horizon)
    out = {}
    for name, step, key in (
        ("bc", learner.bc_step, "bc/loss"),
        ("critic", learner.critic_step, "critic/loss"),
        ("actor", learner.actor_step, "actor/loss"),
    ):
        out[name] = [m[key] for m in ctx.steps(STEPS, step, batches, name)]
    return out


if __name__ == "__main__":
    import torch.distributed as dist

    dist.init_process_group("gloo")
    result = losses()
    if dist.get_rank() == 0:
        with open(sys.argv[1], "w") as f:
            json.dump(result, f)
    dist.barrier()  # no rank tears gloo down while another is still in a collective
    dist.destroy_process_group()

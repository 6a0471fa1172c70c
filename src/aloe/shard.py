"""The learner's data parallelism, written once: batch shards, shard-invariant noise and the
gradient all-reduce. Imports torch alone: a base utility that policies and algos use, and
that `aloe.distributed.ddp` switches on by launching several processes.

With P processes (torchrun; `torch.distributed` initialised, world size P > 1), every rank
samples the same global batch of B chunks (the samplers share the iteration's seed) and
trains on rows [r·B/P, (r+1)·B/P). Every random draw of an update has the batch as its
leading dimension (ε and η of the flow loss, a' of Eq. 7, the M chunks of Eq. 10); `draw`
makes rank r draw the global tensor from the shared generator and keep its own block, so
each row gets the noise it gets on one process and the generators stay in step. Losses are
means over rows, so averaging the ranks' gradients (`all_reduce_grads`) gives the global
batch's gradient, and the clip, AdamW and Polyak steps that follow are those of one
process: the losses equal one process's at the same global batch (to float rounding).

The networks are called through methods (`sample`, `flow_loss_per_sample`), not through
`forward`, so torch's DistributedDataParallel wrapper, whose reducer is armed in
`forward`, does not apply; the gradients are averaged in one flat all-reduce per step
instead, which is what DDP's bucketed reducer does for a model this size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

_SHARDED: ContextVar[bool] = ContextVar("aloe_sharded_step", default=False)
B = TypeVar("B", bound=tuple)


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def active() -> bool:
    """Several learner processes: shard batches and average gradients."""
    return world()[1] > 1


def shard(batch: B) -> B:
    """This rank's rows of a batch whose every field leads with the batch dimension (a field
    that is None, such as a state run's `ChunkBatch.images`, stays None)."""
    rank, size = world()
    n = batch[0].shape[0] // size
    part = slice(rank * n, (rank + 1) * n)
    return type(batch)._make(None if t is None else t[part] for t in batch)  # type: ignore[attr-defined]


def draw(fn: Callable[..., Tensor], shape: Sequence[int], **kwargs: Any) -> Tensor:
    """`fn(shape, **kwargs)` (torch.randn, torch.rand), the same values for each row
    however the batch is sharded: in a sharded step, the global draw's block of this rank."""
    rank, size = world()
    if size == 1 or not _SHARDED.get():
        return fn(tuple(shape), **kwargs)
    n = shape[0]
    return fn((n * size, *shape[1:]), **kwargs)[rank * n : (rank + 1) * n]


@contextmanager
def sharded_step() -> Any:
    """Inside: `draw` draws the global batch's noise and keeps this rank's block."""
    token = _SHARDED.set(True)
    try:
        yield
    finally:
        _SHARDED.reset(token)


def all_reduce_grads(params: Iterable[nn.Parameter]) -> None:
    """Average the gradients over the ranks, in one flat buffer (no-op on one process)."""
    if not active():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world()[1]
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def reduce_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The global batch's metrics from the ranks': means averaged, `*_min` / `*_max` the
    min / max (a `*_std` becomes the mean of the ranks' stds); the same dict on every rank."""
    if not active() or not metrics:
        return metrics
    keys = sorted(metrics)
    values = torch.tensor([metrics[k] for k in keys], dtype=torch.float64)
    lo = values.clone()
    hi = values.clone()
    mean = values.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    dist.all_reduce(mean)
    mean /= world()[1]
    out = {}
    for i, k in enumerate(keys):
        source = lo if k.endswith("_min") else hi if k.endswith("_max") else mean
        out[k] = float(source[i])
    return out


def step_on_shard(step: Callable[[Any], dict[str, float]]) -> Callable[[Any], dict[str, float]]:
    """An update step that, on several processes, trains on this rank's shard of the global
    batch and returns the global batch's metrics; on one process, `step` itself."""
    if not active():
        return step

    def sharded(batch: Any) -> dict[str, float]:
        with sharded_step():
            return reduce_metrics(step(shard(batch)))

    return sharded

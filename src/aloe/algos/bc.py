"""Behaviour cloning by flow matching (Appendix C-3, Eq. 16): ALOE's warm start and a baseline.

As a baseline (algo bc) the warm start is the whole run: its table row has no update.
"""

from __future__ import annotations

from torch import Generator, Tensor

from aloe.algos.optimised import OptimisedModule
from aloe.data import ChunkBatch
from aloe.policies.base import Actor


def bc_loss(
    per_sample_loss: Tensor, valid_rows_mask: Tensor | None = None
) -> tuple[Tensor, dict[str, float]]:
    """Eq. 16, the unweighted mean of the actor's per-sample flow loss (B,).

    valid_rows_mask (B,) keeps only some rows (e.g. successful demonstrations, Alg. 1
    line 1); a batch with no kept row gives loss 0.
    """
    if valid_rows_mask is None:
        loss = per_sample_loss.mean()  # Eq. 16
    else:
        keep = valid_rows_mask.to(per_sample_loss.dtype)
        loss = (per_sample_loss * keep).sum() / keep.sum().clamp_min(1.0)  # Eq. 16
    return loss, {"bc/loss": float(loss.detach())}


def bc_update(
    actor: Actor,
    opt: OptimisedModule,
    b: ChunkBatch,
    generator: Generator | None,
    valid_rows_mask: Tensor | None = None,
) -> dict[str, float]:
    """One behaviour-cloning step of the actor's optimised module on a batch (on its device)."""
    opt.module.train()
    per_sample = actor.flow_loss_per_sample(
        b.state, b.task_index, b.actions, b.valid, generator, images=b.images
    )
    loss, metrics = bc_loss(per_sample, valid_rows_mask)  # Eq. 16
    return opt.step(loss, metrics, "bc")

"""Behaviour cloning by flow matching (Appendix C-3, Eq. 16): ALOE's warm start and a baseline."""

from __future__ import annotations

from torch import Tensor


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

"""RECAP's equations as pure functions (π*0.6, "a VLA that learns from experience",
Physical Intelligence 2025; the learner and update are `aloe.algos.recap`'s).

    n-step advantage   A_t = Σ_{k<n} γ^k r_{t+k} + γ^n V(s_{t+n}) − V(s_t)     (`n_step_advantage`)
    indicator          I_t = 1[A_t > ε_ℓ], ε_ℓ a percentile of task ℓ's A     (`indicators`)
    dropout            I_t left out with probability p (CFG training)         (`drop_indicators`)

The reward r is Eq. 14's as stored, and the reward sum and γ^n are the chunk sampler's
(Eq. 7's, `aloe.datasets.sampler`); classifier-free guidance at inference is
`aloe.policies.indicator.guided_velocity`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Generator, Tensor

from aloe.algos.aloe_math import td_target
from aloe.data import SOURCES, ChunkBatch
from aloe.policies.indicator import DROPPED, NEGATIVE, POSITIVE
from aloe.shard import draw


def n_step_advantage(chunks: ChunkBatch, v: Tensor, v_next: Tensor, inside: Tensor) -> Tensor:
    """A_t (B,) of n-step chunks (the sampler's at horizon n) from V(s_t) (B,) and V(s_{t+n})
    (B,): Eq. 7's reward sum plus γ^n V(s_{t+n}) where s_{t+n} still lies inside t's fragment
    (`inside`, (B,) 0/1), minus V(s_t). Past a fragment's end nothing is added, whatever the
    end (a success, a failure, a cut): the n-step estimate stops where the Monte-Carlo return
    that V regresses on stops, so that A is the residual of the same quantity."""
    target = td_target(chunks._replace(bootstrap=inside), v_next)  # Eq. 7's n-step sum
    return target - v  # RECAP (π*0.6): A_t = Σ_{k<n} γ^k r_{t+k} + γ^n V(s_{t+n}) − V(s_t)


def inside_fragment(fragment_end: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    """1.0 where s_{t+n} is a state of t's fragment (t + n < its end, exclusive), else 0.0."""
    return (rows + n < fragment_end).astype(np.float32)


def indicators(
    advantage: np.ndarray,
    task: np.ndarray,
    human: np.ndarray,
    percentile: float,
    interventions_positive: bool = True,
) -> tuple[np.ndarray, dict[int, float]]:
    """RECAP's improvement indicator per row and each task's threshold ε_ℓ.

    I_t = 1[A_t > ε_ℓ] (POSITIVE, else NEGATIVE), ε_ℓ the `percentile`-th percentile (linear
    interpolation) of the advantages of task ℓ's rows that the advantage labels. With
    `interventions_positive` the operator's rows (`human`, bool) are POSITIVE and left out of
    the percentile, so that at most (100 − percentile) % of the other rows are positive
    (exactly that without ties; a tie at ε_ℓ is negative).
    """
    labels = np.full(advantage.shape, NEGATIVE, dtype=np.int64)
    forced = human if interventions_positive else np.zeros_like(human, dtype=bool)
    thresholds: dict[int, float] = {}
    for ell in np.unique(task):
        mine = (task == ell) & ~forced
        if not mine.any():
            continue
        eps = float(np.percentile(advantage[mine], percentile))  # ε_ℓ
        thresholds[int(ell)] = eps
        labels[mine & (advantage > eps)] = POSITIVE  # I_t = 1[A_t > ε_ℓ]
    labels[forced] = POSITIVE  # interventions: positive (π*0.6)
    return labels, thresholds


def drop_indicators(labels: Tensor, p: float, generator: Generator | None) -> Tensor:
    """The labels (B,) with each left out (DROPPED) with probability p, so that the same
    network learns the unconditional policy too (classifier-free guidance training). One
    uniform draw per row, shard-invariant (`aloe.shard.draw`); none at p = 0."""
    if p <= 0.0:
        return labels
    dev = labels.device
    u = draw(torch.rand, labels.shape, generator=generator, device=dev)
    return torch.where(u < p, torch.full_like(labels, DROPPED), labels)


def positive_shares(labels: np.ndarray, source: np.ndarray) -> dict[str, float]:
    """The share of POSITIVE labels over all rows (`positive_frac`) and per source
    (`positive_demo_frac`, `positive_policy_frac`, `positive_human_frac`; NaN for a source
    without rows)."""
    positive = labels == POSITIVE
    shares = {"positive_frac": float(positive.mean()) if positive.size else float("nan")}
    names = np.asarray(source).astype(str)
    for name in SOURCES:
        mine = names == name
        shares[f"positive_{name}_frac"] = float(positive[mine].mean()) if mine.any() else np.nan
    return shares

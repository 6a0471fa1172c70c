"""RECAP's equations as pure functions (π*0.6, "a VLA that learns from experience",
Physical Intelligence 2025; the learner and update are `aloe.algos.recap`'s).

    n-step advantage   A_t = Σ_{k<n} γ^k r_{t+k} + γ^n V(s_{t+n}) − V(s_t)     (`n_step_advantage`)
    indicator          I_t = 1[A_t > ε_ℓ], ε_ℓ a percentile of task ℓ's A     (`indicators`:
                       `thresholds`, then `indicator`)
    dropout            I_t left out with probability p (CFG training)         (`drop_indicators`)

The reward r is Eq. 14's as stored, and the reward sum and γ^n are the chunk sampler's
(Eq. 7's, `aloe.datasets.sampler`); classifier-free guidance at inference is
`aloe.policies.indicator.guided_velocity`.
"""

from __future__ import annotations

from typing import NamedTuple

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


class Labels(NamedTuple):
    """A run's labels at some buffer rows (N,), as its last iteration defines them."""

    advantage: np.ndarray
    """A_t (float)."""
    positive: np.ndarray
    """I_t (bool)."""
    labelled: np.ndarray
    """I_t is A_t's (bool); False: an operator's row, positive by rule."""
    threshold: np.ndarray
    """ε_ℓ of each row's task (float)."""
    percentile: float
    """P: ε_ℓ is the P-th percentile of task ℓ's labelled advantages."""


def forced_positive(human: np.ndarray, interventions_positive: bool) -> np.ndarray:
    """The rows positive whatever their advantage (bool): the operator's (`human`) with
    `interventions_positive` (π*0.6: a correction is what the operator would have done)."""
    return np.asarray(human, dtype=bool) & bool(interventions_positive)


def thresholds(
    advantage: np.ndarray, task: np.ndarray, labelled: np.ndarray, percentile: float
) -> dict[int, float]:
    """ε_ℓ per task: the `percentile`-th percentile (linear interpolation) of the
    advantages of task ℓ's `labelled` rows (bool); a task without any has none."""
    out: dict[int, float] = {}
    for ell in np.unique(task):
        mine = (task == ell) & labelled
        if mine.any():
            out[int(ell)] = float(np.percentile(advantage[mine], percentile))  # ε_ℓ
    return out


def indicator(
    advantage: np.ndarray, task: np.ndarray, forced: np.ndarray, eps: dict[int, float]
) -> np.ndarray:
    """I_t = 1[A_t > ε_ℓ] per row (POSITIVE, else NEGATIVE; a tie is negative), the
    `forced` rows (bool) POSITIVE; a row of a task without a threshold is NEGATIVE."""
    labels = np.full(advantage.shape, NEGATIVE, dtype=np.int64)
    for ell, threshold in eps.items():
        labels[(task == ell) & (advantage > threshold)] = POSITIVE  # I_t = 1[A_t > ε_ℓ]
    labels[forced] = POSITIVE  # interventions: positive (π*0.6)
    return labels


def indicators(
    advantage: np.ndarray,
    task: np.ndarray,
    human: np.ndarray,
    percentile: float,
    interventions_positive: bool = True,
) -> tuple[np.ndarray, dict[int, float]]:
    """RECAP's improvement indicator per row and each task's threshold ε_ℓ.

    I_t = 1[A_t > ε_ℓ] (`indicator`), ε_ℓ the `percentile`-th percentile of the advantages
    of task ℓ's rows that the advantage labels (`thresholds`). With `interventions_positive`
    the operator's rows (`human`, bool) are POSITIVE and left out of the percentile, so
    that at most (100 − percentile) % of the other rows are positive (exactly that without
    ties; a tie at ε_ℓ is negative).
    """
    forced = forced_positive(human, interventions_positive)
    eps = thresholds(advantage, task, ~forced, percentile)
    return indicator(advantage, task, forced, eps), eps


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

"""The action-level OPE's scores (`aloe.evaluation.action_ope` measures what they read).

Pure functions of arrays over N states, each with C + 1 chunks, the data chunk at index 0:
`q_true` (N, C + 1) the chunks' true Q^π, `q_pess` (N, C + 1) the critic's Eq. 9. The
true advantage of the data chunk is

    A_true(s) = Q^π(s, a_data) − V^π(s),   V^π(s) ≈ 1/C Σ_c Q^π(s, a_c),  a_c ~ π(·|s)

(Eq. 10 with ground truth in place of Q_pess), 0 where every chunk has the same truth.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from aloe.evaluation.ope import spearman

DATA = 0  # index of the data chunk among a state's C + 1 chunks


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's correlation; NaN when a side is constant or there are fewer than 2 points."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def constant_rows(q: np.ndarray) -> np.ndarray:
    """(N,) bool: every chunk of the state has the same value (to float round-off)."""
    q = np.asarray(q, dtype=np.float64)
    if not q.size:
        return np.zeros(len(q), dtype=bool)
    return np.ptp(q, axis=1) <= 1e-9 * np.maximum(1.0, np.abs(q).max(axis=1))


def advantages(q: np.ndarray) -> np.ndarray:
    """(N,) the data chunk's value minus the mean of π's chunks' (Eq. 10's A)."""
    q = np.asarray(q, np.float64)
    return np.asarray(q[:, DATA] - q[:, 1:].mean(1))


def true_advantages(q_true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A_true (N,) of the module docstring, and (N,) bool: the state's truth is constant
    (no ranking; its A_true is 0)."""
    flat = constant_rows(q_true)
    return np.where(flat, 0.0, advantages(q_true)), flat


def score_states(
    q_pess: np.ndarray | None, q_true: np.ndarray, weights: np.ndarray | None = None
) -> dict[str, Any]:
    """The action-level OPE's scores for states (N,) with C + 1 chunks each (data at 0);
    without a critic (`q_pess` None) the truth's alone."""
    a_true, flat = true_advantages(q_true)
    varied = ~flat
    out: dict[str, Any] = {"states": len(a_true), "constant_truth": int(flat.sum())}
    if q_pess is not None:
        out |= critic_scores(np.asarray(q_pess, np.float64), q_true, a_true, flat)
    out["true_advantage_positive"] = mean(a_true[varied] > 0)
    if q_pess is not None:
        out["advantage_spearman"] = spearman(advantages(q_pess), a_true)
    if weights is not None:
        w = np.asarray(weights, np.float64)
        out["weight_sign_accuracy"] = mean((w[varied] > 1) == (a_true[varied] > 0))
        out["weights_pearson"] = pearson(w, a_true)
        out["weights_spearman"] = spearman(w, a_true)
    return out


def critic_scores(
    q_pess: np.ndarray, q_true: np.ndarray, a_true: np.ndarray, flat: np.ndarray
) -> dict[str, Any]:
    """The critic's within-state Spearman (states whose truth varies, apart from those
    where the critic gives every chunk one value) and the sign accuracy of its A."""
    rho = np.array(
        [math.nan if f else spearman(e, t) for e, t, f in zip(q_pess, q_true, flat, strict=True)]
    )
    ranked = ~np.isnan(rho)
    varied = ~flat
    a_hat = advantages(q_pess)
    return {
        "constant_estimate": int((varied & ~ranked).sum()),
        "within_state_spearman": mean(rho[ranked]),
        "within_state_spearman_n": int(ranked.sum()),
        "sign_accuracy": mean((a_hat[varied] > 0) == (a_true[varied] > 0)),
        "sign_n": int(varied.sum()),
    }


def best_of_n_regret(q_pess: np.ndarray, q_true: np.ndarray) -> np.ndarray:
    """(N,) regret of picking by the critic among each state's N chunks of π (index 1 on; the
    data chunk at 0 is left out): mean_c Q^π(s, a_c) − Q^π(s, a_j*), j* = argmax_c Q_pess.

    Negative is good: the critic's pick beats a chunk of π drawn at random by that much
    (true return). 0: no better than chance; the oracle's floor is mean − max."""
    q_pess = np.asarray(q_pess, np.float64)[:, 1:]
    q_true = np.asarray(q_true, np.float64)[:, 1:]
    picked = q_true[np.arange(len(q_true)), q_pess.argmax(axis=1)]
    return np.asarray(q_true.mean(axis=1) - picked)


def split_half_spearman(truth: np.ndarray) -> np.ndarray:
    """(N,) within-state Spearman between the truth's two halves (N, C + 1, R): the mean
    of the even rollouts against the mean of the odd ones, over a state's C + 1 chunks. The
    truth's split-half reliability, the ceiling of a critic's within-state Spearman. NaN
    where a half gives every chunk one value (no ranking); needs R >= 2."""
    truth = np.asarray(truth, np.float64)
    if truth.shape[-1] < 2:
        raise ValueError(f"split-half reliability needs >= 2 rollouts, got {truth.shape[-1]}")
    even = truth[..., ::2].mean(axis=-1)
    odd = truth[..., 1::2].mean(axis=-1)
    return np.array([spearman(x, y) for x, y in zip(even, odd, strict=True)])


def mean(x: np.ndarray) -> float:
    """The mean, NaN over no element."""
    return float(np.mean(x)) if len(x) else math.nan

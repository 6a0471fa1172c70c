"""An improvement indicator against the restored-rollout truth: the action-level OPE's
`indicator_*` scores, for a run that labels its data (its table row's `labels_at`: RECAP).

At the action-level OPE's N buffer states, stratified by source, the truth gives
A_true(s) = Q^π(s, a_data) − V^π(s) (`aloe.evaluation.action_scores`). The run gives, at
the same rows, its own A and I as its last iteration's labels define them
(`aloe.algos.recap.labels_at`). Both sides use one rule (`aloe.algos.recap_math`):

    the run's     I = 1[A > ε_ℓ]             ε_ℓ its last labels' threshold of task ℓ,
                                              the operator's rows positive (as it trains)
    the truth's   I_true = 1[A_true > ε_true]  ε_true the same percentile P of A_true over
                                              the sampled rows the run's percentile reads

ε_true is a percentile of the sample because the truth exists only there. With
interventions positive the run's percentile leaves the operator's rows out, and so does
ε_true's; the truth forces nothing, so on the operator's rows the agreement is the share
of interventions whose chunk truly beats ε_true. The sample holds an equal share of each
source where the buffer holds its own mix, so the two sides may label different shares
positive: both shares are reported, and `indicator_chance`, the agreement of two
independent labellings with those shares.

Scores, overall and per source (a state whose truth is constant has A_true = 0 and counts):

    indicator_agreement        mean(I == I_true) over the rows (`indicator_n`)
    indicator_positive         mean(I); `indicator_true_positive` mean(I_true)
    indicator_chance           p·q + (1 − p)(1 − q) of those two shares
    indicator_sign_agreement   mean((A > 0) == (A_true > 0)) over the rows whose truth
                               varies (`indicator_sign_n`), as the critic's sign accuracy

and overall P (`indicator_percentile`), the mean ε_ℓ over the rows (`indicator_threshold`)
and ε_true (`indicator_true_threshold`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from aloe import data as D
from aloe.algos.recap_math import Labels, indicator, thresholds
from aloe.evaluation.action_scores import mean, true_advantages
from aloe.policies.indicator import POSITIVE


def run_labels(
    run: Any, frames: Mapping[str, np.ndarray], rows: np.ndarray, seed: int
) -> Labels | None:
    """A loaded run's labels at buffer `rows` (its row's `labels_at`, the learner's
    generator seeded for any sampling it does), or None when its algorithm labels nothing."""
    labels_at = run.algorithm.labels_at
    if labels_at is None:
        return None
    run.learner.generator.manual_seed(seed)
    return labels_at(run.learner, run.config, D.Frames(frames), np.asarray(rows))


def true_indicator(
    a_true: np.ndarray, labelled: np.ndarray, percentile: float
) -> tuple[np.ndarray, float]:
    """I_true (N,) bool and ε_true: the run's rule on the true advantages, ε_true the
    `percentile`-th percentile of A_true over the `labelled` rows, no row forced (NaN and
    every row negative when no row is labelled)."""
    task = np.zeros(len(a_true), dtype=np.int64)
    eps = thresholds(a_true, task, labelled, percentile)
    positive = indicator(a_true, task, np.zeros(len(a_true), dtype=bool), eps) == POSITIVE
    return positive, eps.get(0, math.nan)


def indicator_scores(
    advantage: np.ndarray,
    positive: np.ndarray,
    a_true: np.ndarray,
    positive_true: np.ndarray,
    varied: np.ndarray,
) -> dict[str, Any]:
    """The module docstring's scores of rows (N,): the run's A and I, the truth's A_true and
    I_true, and `varied` (bool) where the state's truth is not constant."""
    p, q = mean(positive), mean(positive_true)
    sign = (np.asarray(advantage) > 0) == (np.asarray(a_true) > 0)
    return {
        "indicator_agreement": mean(positive == positive_true),
        "indicator_n": len(positive),
        "indicator_positive": p,
        "indicator_true_positive": q,
        "indicator_chance": p * q + (1 - p) * (1 - q),
        "indicator_sign_agreement": mean(sign[varied]),
        "indicator_sign_n": int(np.sum(varied)),
    }


def agreement_scores(
    labels: Labels, q_true: np.ndarray, mask: np.ndarray | None = None
) -> dict[str, Any]:
    """The scores of the rows in `mask` (all by default) against the truth's indicator
    over every sampled row; without a mask also P, ε_ℓ and ε_true."""
    a_true, flat = true_advantages(q_true)
    positive_true, eps_true = true_indicator(a_true, labels.labelled, labels.percentile)
    m = np.ones(len(a_true), dtype=bool) if mask is None else np.asarray(mask)
    out = indicator_scores(
        labels.advantage[m], labels.positive[m], a_true[m], positive_true[m], ~flat[m]
    )
    if mask is None:
        out["indicator_percentile"] = labels.percentile
        out["indicator_threshold"] = mean(labels.threshold)
        out["indicator_true_threshold"] = eps_true
    return out

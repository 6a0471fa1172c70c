"""A run's labels against the truth's indicator (the action-level OPE's `indicator_*`
scores), on a hand-computed table."""

import math

import numpy as np
import pytest
from known_replays import GAMMA

from aloe.algos.recap_math import Labels
from aloe.evaluation.action_ope import ActionOpeConfig, ActionOpeResult, Candidates, plot_action_ope
from aloe.evaluation.indicator import agreement_scores, indicator_scores, true_indicator

# Six states, the data chunk and C = 2 chunks of π each; A_true = Q(data) − mean Q(π):
Q_TRUE = np.array(
    [
        [-1.0, -3.0, -5.0],  # policy  A_true = 3
        [-6.0, -4.0, -4.0],  # policy  A_true = −2
        [-2.0, -2.0, -2.0],  # demo    constant truth: A_true = 0
        [-1.0, -2.0, -4.0],  # demo    A_true = 2
        [-5.0, -2.0, -2.0],  # human   A_true = −3
        [0.0, -4.0, -2.0],  # human   A_true = 3
    ]
)
SOURCE = np.array(["policy", "policy", "demo", "demo", "human", "human"])
# the run's A at the rows, its ε_ℓ = 0.3, the operator's rows positive whatever their A
ADVANTAGE = np.array([0.5, 0.2, -0.1, -0.3, -1.0, 0.4])
LABELS = Labels(
    advantage=ADVANTAGE,
    positive=np.array([True, False, False, False, True, True]),
    labelled=SOURCE != "human",
    threshold=np.full(6, 0.3),
    percentile=50.0,
)


def test_the_truths_indicator_is_the_runs_rule_on_the_true_advantages():
    # A_true of the labelled rows: 3, −2, 0, 2; their 50th percentile (linear): (0 + 2)/2 = 1
    a_true = np.array([3.0, -2.0, 0.0, 2.0, -3.0, 3.0])
    positive, eps = true_indicator(a_true, LABELS.labelled, 50.0)
    assert eps == pytest.approx(1.0)
    assert positive.tolist() == [True, False, False, True, False, True]  # nothing forced
    tie, eps = true_indicator(np.array([1.0, 2.0, 3.0]), np.ones(3, bool), 50.0)
    assert eps == 2.0 and tie.tolist() == [False, False, True]  # a tie at ε is negative
    none, eps = true_indicator(np.array([1.0, 2.0]), np.zeros(2, bool), 50.0)
    assert math.isnan(eps) and not none.any()


def test_agreement_overall_and_per_source_by_hand():
    # run's I: T F F F T T; truth's I (ε_true = 1): T F F T F T -> rows 3 and 4 disagree
    s = agreement_scores(LABELS, Q_TRUE)
    assert s["indicator_n"] == 6 and s["indicator_agreement"] == pytest.approx(4 / 6)
    assert s["indicator_positive"] == 0.5 and s["indicator_true_positive"] == 0.5
    assert s["indicator_chance"] == pytest.approx(0.5)  # 0.5·0.5 + 0.5·0.5
    # signs over the 5 states whose truth varies: A > 0 at rows 0, 1, 5; A_true > 0 at 0, 3, 5
    assert s["indicator_sign_n"] == 5 and s["indicator_sign_agreement"] == pytest.approx(3 / 5)
    assert s["indicator_percentile"] == 50.0 and s["indicator_threshold"] == pytest.approx(0.3)
    assert s["indicator_true_threshold"] == pytest.approx(1.0)
    expected = {  # agreement, chance, sign agreement, sign rows
        "policy": (1.0, 0.5, 0.5, 2),  # p = q = 1/2
        "human": (0.5, 0.5, 1.0, 2),  # p = 1, q = 1/2
        "demo": (0.5, 0.5, 0.0, 1),  # p = 0, q = 1/2; row 2's truth is constant
    }
    for source, (agree, chance, sign, sign_n) in expected.items():
        by = agreement_scores(LABELS, Q_TRUE, source == SOURCE)  # ε_true over every row
        assert by["indicator_n"] == 2 and by["indicator_agreement"] == pytest.approx(agree)
        assert by["indicator_chance"] == pytest.approx(chance)
        assert by["indicator_sign_agreement"] == pytest.approx(sign)
        assert by["indicator_sign_n"] == sign_n and "indicator_true_threshold" not in by


def test_indicator_scores_of_no_rows_are_undefined_not_an_error():
    empty = np.zeros(0)
    s = indicator_scores(empty, empty.astype(bool), empty, empty.astype(bool), empty.astype(bool))
    assert s["indicator_n"] == 0 and math.isnan(s["indicator_agreement"])
    assert math.isnan(s["indicator_chance"]) and s["indicator_sign_n"] == 0


def test_a_run_with_labels_and_no_critic_is_scored_by_its_labels(tmp_path):
    """RECAP with `advantage value`: no chunked Q, so the truth's and the labels' scores."""
    cands = Candidates(
        np.arange(6),
        SOURCE,
        np.zeros((6, 2)),
        np.zeros((6, 3, 1, 1)),
        np.ones((6, 3, 1)),
        None,
    )
    cfg = ActionOpeConfig(states=6, chunks=2, rollouts=1)
    truth = Q_TRUE[..., None]
    result = ActionOpeResult(cfg, GAMMA, 1, cands, truth, np.ones(6, bool), None, None, 0.0, LABELS)
    d = result.as_dict()
    assert "within_state_spearman" not in d and "sign_accuracy" not in d
    assert d["constant_truth"] == 1 and d["indicator_agreement"] == pytest.approx(4 / 6)
    assert d["by_source"]["policy"]["indicator_agreement"] == 1.0
    sample = d["samples"][3]
    assert "q_pess" not in sample and sample["advantage_true"] == pytest.approx(2.0)
    assert (sample["indicator"], sample["indicator_true"]) == (False, True)
    assert sample["indicator_advantage"] == pytest.approx(-0.3)
    path = plot_action_ope(result, tmp_path / "action-ope.png")  # the labels' panel alone
    assert path.read_bytes()[:4] == b"\x89PNG"

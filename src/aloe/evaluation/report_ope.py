"""The run report's sections on the critic against restored-rollout truth: the OPE of Q^π
and V^π (`aloe.evaluation.ope`) and the action-level OPE (`aloe.evaluation.action_ope`),
with a run's labels against the truth's indicator (`aloe.evaluation.indicator`)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from aloe.report import details_html, png_html, table_html


def ope_html(run_dir: Path, ope: dict[str, Any]) -> str:
    note = (
        f'<p class="note">{ope.get("pairs")} (state, chunk) pairs from the buffer; ground truth '
        f"from {ope['config']['rollouts']} rollouts each after an exact restore "
        f"(restore exact on {100 * (ope.get('restore_exact') or 0):.0f}% of pairs); "
        f"γ = {ope.get('gamma')}, π executes {ope.get('exec_horizon')} actions per chunk, "
        f"operator watch {'on' if ope['config'].get('watch') else 'off'}. "
        "bias = mean(estimate − truth). Behaviour return = the data's own Monte-Carlo "
        "return (what on-policy value regression on the buffer targets).</p>"
    )
    rows = [{"pairs": "all", **r} for r in _estimator_rows(ope)]
    by_source = []
    for source, scores in (ope.get("by_source") or {}).items():
        by_source += [{"pairs": source, **r} for r in _estimator_rows(scores)]
    cols = ("pairs", "estimator", "against", "spearman", "bias", "rmse", "n")
    body = note + table_html(rows, cols)
    if by_source:
        body += details_html("by source of the pairs", table_html(by_source, cols))
    scatter = ope.get("scatter")
    if scatter and (run_dir / scatter).is_file():
        body += png_html(run_dir / scatter, "OPE scatter")
    return body


def _estimator_rows(scores: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    if "q_pess" in scores:
        rows.append({"estimator": "Q_pess (Eq. 9)", "against": "Q^π", **scores["q_pess"]})
    for i, member in enumerate(scores.get("q_members") or []):
        rows.append({"estimator": f"Q member {i}", "against": "Q^π", **member})
    if "v" in scores:
        rows.append({"estimator": "V^π (Eq. 10)", "against": "V^π", **scores["v"]})
    for key, value in scores.items():
        if key.startswith("value:"):
            rows.append({"estimator": key[6:], "against": "V^π", **value})
    rows.append({"estimator": "behaviour return", "against": "Q^π", **scores["behaviour_return"]})
    return rows


ACTION_OPE_COLUMNS = (
    "states",
    "within_state_spearman",
    "within_state_spearman_n",
    "constant_truth",
    "constant_estimate",
    "sign_accuracy",
    "true_advantage_positive",
    "weight_sign_accuracy",
    "weights_pearson",
    "weights_spearman",
    "advantage_spearman",
)


def action_ope_html(run_dir: Path, entry: dict[str, Any]) -> str:
    if not entry.get("applicable"):
        return f'<p class="note">Not applicable: {html.escape(str(entry.get("reason")))}.</p>'
    cfg = entry["config"]
    counts = entry["counts"]
    note = (
        f'<p class="note">{counts["states"]} buffer states stratified by source, at each the '
        f"data chunk and {cfg['chunks']} chunks sampled from π; ground truth Q^π of every chunk "
        f"from {cfg['rollouts']} rollouts after an exact restore (restore exact on "
        f"{100 * (entry.get('restore_exact') or 0):.0f}% of states; {counts['rollouts']} "
        f"rollouts in {entry.get('wall_s', 0):.0f} s); true V^π = the mean true Q of π's "
        f"chunks; γ = {entry.get('gamma')}, operator watch "
        f"{'on' if cfg.get('watch') else 'off'}. Within-state Spearman: Q_pess against the "
        "truth over the chunks of one state, averaged over states; a state whose truth is the "
        "same for every chunk is counted apart (constant_truth). Sign accuracy: critic's "
        "A > 0 exactly when the data chunk's true value beats V^π; true_advantage_positive is "
        "that base rate. Weights: the actor's exp(clip(A/β)) (Eq. 11) against the true "
        "advantage, across states. A column the run has nothing for (no chunked Q critic, "
        "no weights) is left out.</p>"
    )
    rows = [{"source": "all", **entry}]
    rows += [{"source": s, **scores} for s, scores in (entry.get("by_source") or {}).items()]
    columns = [c for c in ACTION_OPE_COLUMNS if c in entry]
    body = note + table_html(rows, ("source", *columns))
    if "indicator_agreement" in entry:
        body += _indicator_html(entry, rows)
    figure = entry.get("figure")
    if figure and (run_dir / figure).is_file():
        body += png_html(run_dir / figure, "action-level OPE")
    return body


def _indicator_html(entry: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The run's labels against the truth's indicator (`aloe.evaluation.indicator`)."""
    eps_true = entry.get("indicator_true_threshold")
    note = (
        f'<p class="note">The run\'s improvement indicator I = 1[A > ε_ℓ] at the same '
        f"states (A as its labels compute it, ε_ℓ its last labels' threshold, mean "
        f"{_number(entry.get('indicator_threshold'))}; the operator's rows positive) against "
        f"the truth's 1[A_true > ε_true], ε_true = {_number(eps_true)}: the same percentile "
        f"(P = {entry.get('indicator_percentile')}) of the true advantages over the sampled "
        "rows the run's percentile reads (all but the operator's, whose rows it labels "
        "positive). Chance: the agreement of independent labels with the two positive "
        "shares. Sign: A > 0 exactly when A_true > 0, over the states whose truth varies.</p>"
    )
    return note + table_html(rows, ("source", *INDICATOR_COLUMNS))


def _number(x: Any) -> str:
    return "–" if x is None else f"{x:.3g}"


INDICATOR_COLUMNS = (
    "indicator_n",
    "indicator_agreement",
    "indicator_chance",
    "indicator_positive",
    "indicator_true_positive",
    "indicator_sign_agreement",
    "indicator_sign_n",
)

"""A run's self-contained HTML report, rebuilt from what the run directory holds.

    config.json    the run's settings
    metrics.jsonl  one plot per metric over iterations (success, takeovers, losses, Q, ...)
    eval.json      `aloe eval --suite full`: nominal, variants, perturbations, OPE tables
    eval/*.png     Q traces, the OPE scatter and the action-level OPE, embedded as base64

Anything missing is skipped with a note, so the report of a run that is still training, or
that was never evaluated with the full suite, still builds.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from aloe.report import figure_html, png_html, table_html, write_page

CONFIG_FIELDS = (
    "task",
    "algo",
    "preset",
    "seed",
    "iterations",
    "horizon",
    "exec_horizon",
    "num_demos",
    "bc_steps",
    "eval_episodes",
)
SPEED_COLUMNS = (
    "condition",
    "description",
    "success_rate",
    "success_ci95",
    "mean_steps_to_success",
    "throughput",
    "episodes_per_hour",
    "episodes",
    "failure_reasons",
)
SKIP_METRICS = {"iteration", "wall_s"}


def build_run_report(run_dir: Path) -> Path:
    """Write `run_dir/report.html` and return its path (a UsageError if it is not a run)."""
    from aloe.errors import bad

    run_dir = Path(run_dir)
    config = _read_json(run_dir / "config.json")
    if not isinstance(config, dict):
        raise bad(
            "run", run_dir, "no readable config.json; give a directory written by `aloe train`"
        )
    title = f"aloe run {run_dir.name}: {config.get('task', '?')}, {config.get('algo', '?')}"
    sections = [("Configuration", _config_html(config))]
    sections.append(("Training metrics per iteration", _metrics_html(run_dir / "metrics.jsonl")))
    by_task = _by_task_html(run_dir / "metrics.jsonl")
    if by_task:
        sections.append(("Success per task (multi-task run)", by_task))
    ev = _read_json(run_dir / "eval.json")
    if ev is None or "nominal" not in ev:
        note = "No eval.json from `aloe eval --suite full` yet."
        sections.append(("Evaluation", f'<p class="note">{note}</p>'))
    else:
        sections += _eval_sections(run_dir, ev)
    return write_page(run_dir / "report.html", title, sections)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _config_html(config: dict[str, Any]) -> str:
    rows = [{"field": k, "value": config.get(k)} for k in CONFIG_FIELDS if k in config]
    for group, key in (("aloe", "beta"), ("optim", "gamma"), ("aloe", "gamma")):  # γ: old runs'
        part = config.get(group) or {}
        if key in part:
            rows.append({"field": f"{group}.{key}", "value": part[key]})
    return table_html(rows)


def _metrics_html(path: Path) -> str:
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return '<p class="note">No metrics.jsonl.</p>'
    names = dict.fromkeys(k for r in rows for k in r)  # every key, first-seen order
    keys = [k for k in names if k not in SKIP_METRICS and _finite(r.get(k) for r in rows)]
    if not keys:
        return '<p class="note">No numeric metrics.</p>'
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    cols = 4
    nrows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.3 * nrows), squeeze=False)
    x = [r.get("iteration") for r in rows]
    for ax, key in zip(axes.flat, keys, strict=False):
        y = [r.get(key) if isinstance(r.get(key), int | float) else math.nan for r in rows]
        ax.plot(x, [math.nan if v is None else v for v in y], "o-", ms=3)
        ax.set_title(key, fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.supxlabel("iteration", fontsize=9)
    fig.tight_layout()
    return figure_html(fig, "metrics per iteration")


def _by_task_html(path: Path) -> str | None:
    """A multi-task run's evaluation per task: success at each iteration, final steps."""
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return None
    rows = [r for r in rows if r.get("success_by_task")]
    if not rows:
        return None
    table = []
    for task in rows[-1]["success_by_task"]:
        line: dict[str, Any] = {"task": task}
        line |= {f"iter {r['iteration']}": r["success_by_task"].get(task) for r in rows}
        line["final steps to success"] = rows[-1]["steps_to_success_by_task"].get(task)
        table.append(line)
    mean = {"task": "mean", **{f"iter {r['iteration']}": r["success_rate"] for r in rows}}
    return table_html(
        [*table, mean | {"final steps to success": rows[-1].get("mean_steps_to_success")}]
    )


def _finite(values: Any) -> bool:
    return any(isinstance(v, int | float) and math.isfinite(v) for v in values)


def _eval_sections(run_dir: Path, ev: dict[str, Any]) -> list[tuple[str, str]]:
    head = (
        f'<p class="note">Checkpoint of iteration {ev.get("iteration")}, episodes on seeds '
        f"{ev.get('seeds')}; throughput = successful episodes per hour of policy-side robot "
        "time, episodes_per_hour = every completed episode (Appendix E).</p>"
    )
    speed = [_speed_row("nominal", ev["nominal"])]
    speed += [_speed_row(name, m) for name, m in (ev.get("variants") or {}).items()]
    perturbed = [_speed_row("nominal", ev["nominal"])]
    perturbed += [_speed_row(name, m) for name, m in (ev.get("perturbations") or {}).items()]
    sections = [
        ("Success and throughput; unseen objects", head + table_html(speed, SPEED_COLUMNS)),
        ("Robustness to perturbations", table_html(perturbed, SPEED_COLUMNS)),
    ]
    traces = [
        png_html(run_dir / p, Path(p).stem)
        for p in ev.get("q_traces") or []
        if (run_dir / p).is_file()
    ]
    if traces:
        sections.append(("Q traces (Figs. 3 and 9)", "\n".join(traces)))
    if ev.get("ope"):
        sections.append(("Off-policy evaluation accuracy", _ope_html(run_dir, ev["ope"])))
    if ev.get("action_ope"):
        sections.append(
            (
                "Action-level OPE: chunks ranked at one state",
                _action_ope_html(run_dir, ev["action_ope"]),
            )
        )
    if ev.get("weights_by_source"):
        note = (
            '<p class="note">Chunks drawn from the buffer as training draws them; weights '
            "exp(clip(A/β)) (Eq. 11) from the checkpoint's critic.</p>"
        )
        rows = [{"source": k, **v} for k, v in ev["weights_by_source"].items()]
        outcome = [
            {"policy chunk": k, **v} for k, v in (ev.get("weights_by_policy_outcome") or {}).items()
        ]
        split = (
            (
                '<p class="note">The policy\'s chunks by how their fragment ended (shares of '
                "the whole buffer's weight). HG-DAgger never imitates the first two.</p>"
                + table_html(outcome)
            )
            if outcome
            else ""
        )
        sections.append(("Which data the actor imitates", note + table_html(rows) + split))
    return sections


def _speed_row(name: str, m: dict[str, Any]) -> dict[str, Any]:
    row = {"condition": name, **m}
    ci = m.get("success_ci95")
    row["success_ci95"] = f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else None
    reasons = m.get("failure_reasons") or {}
    row["failure_reasons"] = ", ".join(f"{k} ×{v}" for k, v in reasons.items())
    return row


def _ope_html(run_dir: Path, ope: dict[str, Any]) -> str:
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
    for source, scores in (ope.get("by_source") or {}).items():
        rows += [{"pairs": source, **r} for r in _estimator_rows(scores)]
    cols = ("pairs", "estimator", "against", "spearman", "bias", "rmse", "n")
    body = note + table_html(rows, cols)
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


def _action_ope_html(run_dir: Path, entry: dict[str, Any]) -> str:
    if not entry.get("applicable"):
        return f'<p class="note">Not applicable: {html.escape(str(entry.get("reason")))}.</p>'
    cfg, counts = entry["config"], entry["counts"]
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
        "advantage, across states.</p>"
    )
    rows = [{"source": "all", **entry}]
    rows += [{"source": s, **scores} for s, scores in (entry.get("by_source") or {}).items()]
    body = note + table_html(rows, ("source", *ACTION_OPE_COLUMNS))
    figure = entry.get("figure")
    if figure and (run_dir / figure).is_file():
        body += png_html(run_dir / figure, "action-level OPE")
    return body

"""A run's self-contained HTML report, rebuilt from what the run directory holds.

    config.json      the run's settings
    metrics.jsonl    the headline (BC → final success, operator steps, wall time) and the
                     figures: success, the operator's effort, the critic, the actor
                     (aloe.evaluation.report_plots); the raw rows in a collapsed table
    dataset/         the episodes' failure reasons, per iteration
    eval-basic.json  `aloe eval`: success with its interval on the evaluation seeds
    eval.json        `aloe eval --suite full`: nominal, variants, perturbations, OPE, weights
    eval/*.png       Q traces, the OPE scatter and the action-level OPE, embedded as base64

Anything missing is skipped with a note, so the report of a run that is still training, or
that was never evaluated with the full suite, still builds.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from aloe.datasets.store import EpisodeStore
from aloe.errors import bad
from aloe.evaluation import report_plots as P
from aloe.evaluation.metrics import wilson_interval
from aloe.evaluation.report_ope import action_ope_html, ope_html
from aloe.progress import duration, plural
from aloe.report import details_html, figure_html, png_html, table_html, write_page

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
BASIC_EVAL = "eval-basic.json"
FULL_EVAL = "eval.json"
SPREAD = P.SPREAD
CRITIC = (
    ("critic TD loss (Eq. 7–8)", ("critic_loss",)),
    ("value estimates", ("q_mean", "q_pess_mean", "v_mean")),
    ("ensemble spread", (SPREAD,)),
)
ACTOR = (
    ("actor loss", ("actor_flow_loss",)),
    ("advantage", ("advantage_mean", "advantage_std")),
    ("actor weights (Eq. 11)", ("weight_mean", "weight_max")),
    ("weights clipped", ("weight_clipped_frac",)),
    (
        "positive indicator (RECAP)",
        ("positive_frac", "positive_demo_frac", "positive_policy_frac", "positive_human_frac"),
    ),
    ("indicator threshold ε_ℓ (RECAP)", ("advantage_threshold",)),
)
SHOWN = {
    "iteration",
    "success_rate",
    "eval_episodes",
    "human_steps",
    "takeovers",
    *(k for _, keys in (*CRITIC, *ACTOR) for k in keys),
}


def build_run_report(run_dir: Path) -> Path:
    """Write `run_dir/report.html` and return its path (a UsageError if it is not a run)."""
    run_dir = Path(run_dir)
    config = _read_json(run_dir / "config.json")
    if not isinstance(config, dict):
        raise bad(
            "run", run_dir, "no readable config.json; give a directory written by `aloe train`"
        )
    rows = _metrics(run_dir / "metrics.jsonl")
    basic = _read_json(run_dir / BASIC_EVAL)
    full = _read_json(run_dir / FULL_EVAL)
    full = full if isinstance(full, dict) and "nominal" in full else None
    basic = basic if isinstance(basic, dict) and "success_rate" in basic else None
    title = f"aloe run {run_dir.name}: {config.get('task', '?')}, {config.get('algo', '?')}"
    sections = _training_sections(run_dir, rows, full)
    sections.append(("Evaluations", _evaluations_html(basic, full)))
    if full is not None:
        sections += _eval_sections(run_dir, full)
    sections.append(("Configuration", _config_html(config)))
    sections.append(("Raw metrics", _raw_html(rows)))
    lead = _headline_html(config, rows, basic, full)
    return write_page(run_dir / "report.html", title, sections, lead=lead)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _metrics(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's rows, with the derived ensemble spread; none if unreadable."""
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return []
    for r in rows:
        if P.finite(r.get("q_mean")) and P.finite(r.get("q_pess_mean")):
            r[SPREAD] = r["q_mean"] - r["q_pess_mean"]
    return [r for r in rows if isinstance(r, dict) and isinstance(r.get("iteration"), int)]


def _interval(rate: Any, n: Any) -> str:
    """`0.45 [0.26, 0.66]`: a success rate and its 95 % Wilson interval over n episodes
    (the rate alone when n is unknown, `–` when the rate is)."""
    if not P.finite(rate):
        return "–"
    if not (isinstance(n, int) and n > 0):
        return f"{rate:.2f}"
    low, high = wilson_interval(round(rate * n), n)
    return f"{rate:.2f} [{low:.2f}, {high:.2f}]"


def _headline_html(
    config: dict[str, Any],
    rows: list[dict[str, Any]],
    basic: dict[str, Any] | None,
    full: dict[str, Any] | None,
) -> str:
    """BC → final success with 95 % intervals, the operator's steps, the wall time."""
    what = (
        f"{config.get('algo', '?')} on {config.get('task', '?')}, preset "
        f"{config.get('preset', '?')}, seed {config.get('seed', '?')}"
    )
    if not rows:
        none = f"{html.escape(what)}: no iteration finished yet."
        return f'<div class="headline"><p>{none}</p></div>'
    first = rows[0]
    last = rows[-1]
    success = _interval(first.get("success_rate"), P.success_episodes(first))
    if len(rows) > 1:
        final = _interval(last.get("success_rate"), P.success_episodes(last))
        success = f"BC {success} → final {final}"
    total = last.get("total_human_steps", 0)
    demos = first.get("human_steps", 0)
    takeovers = sum(r.get("takeovers", 0) for r in rows[1:])
    wall = sum(r.get("wall_s", 0.0) for r in rows if P.finite(r.get("wall_s")))
    measured = (
        f"<p>success rate [95 % Wilson interval] on {first.get('eval_episodes', '?')} "
        f"evaluation episodes at iteration 0 and {last.get('eval_episodes', '?')} at "
        f"iteration {last['iteration']}</p>"
    )
    if P.robot_rows(rows):
        measured = (
            "<p>a robot run: no simulator evaluates its policy. Success [95 % Wilson "
            "interval] is of each iteration's robot episodes, played by the previous "
            "iteration's policy: the share it finished with no takeover (marked success); "
            "iteration 0, the warm start, has none</p>"
        )
    lines = [
        f"<p class='big'><b>Success {success}</b></p>",
        measured,
        f"<p><b>Operator</b> {total} steps ({demos} demonstrating, {total - demos} in "
        f"{plural(takeovers, 'takeover')}) · <b>wall time</b> {duration(wall)} · "
        f"{html.escape(what)}</p>",
    ]
    for name, ev in (("aloe eval", basic), ("aloe eval --suite full", full)):
        if ev is None:
            continue
        m = ev.get("nominal") or ev
        if P.finite(m.get("success_rate")) and m.get("episodes"):
            lines.append(
                f"<p><b>{name}</b> (iteration {ev.get('iteration')}): success "
                f"{_interval(m['success_rate'], m['episodes'])} on {m['episodes']} episodes</p>"
            )
    return '<div class="headline">' + "".join(lines) + "</div>"


def _note(text: str) -> str:
    return f'<p class="note">{text}</p>'


def _figure_or(fig: Any, alt: str, otherwise: str) -> str:
    return figure_html(fig, alt) if fig is not None else _note(otherwise)


def _training_sections(
    run_dir: Path, rows: list[dict[str, Any]], full: dict[str, Any] | None
) -> list[tuple[str, str]]:
    if not rows:
        return [("Training", _note("No metrics.jsonl yet: no iteration has finished."))]
    sections = [
        (
            "Success per iteration",
            _figure_or(
                P.success_figure(rows),
                "success per iteration",
                _flat_success(rows),
            ),
        ),
        ("The operator's effort", _effort_html(run_dir, rows)),
    ]
    by_task = _by_task_html(rows)
    if by_task:
        sections.append(("Success per task (multi-task run)", by_task))
    critic = P.panels_figure(rows, CRITIC)
    if critic is not None or (full and full.get("ope")):
        body = _figure_or(critic, "critic health", "No critic metrics vary over the run.")
        if full and full.get("ope"):
            body += "<h3>Q against the ground truth</h3>" + ope_html(run_dir, full["ope"])
        sections.append(("The critic's health", body))
    actor = P.panels_figure(rows, ACTOR)
    if actor is not None:
        sections.append(("The actor's update", figure_html(actor, "actor update")))
    if full and full.get("weights_by_source"):
        sections.append(("Which data the actor imitates", _weights_html(full)))
    other = [
        k
        for k in _numeric_keys(rows)
        if k not in SHOWN and k != "wall_s" and not k.startswith("total_")  # sums of shown
    ]
    figure = P.panels_figure(rows, [(P.label(k)[0], (k,)) for k in other])
    if figure is not None:
        sections.append(("Other metrics", figure_html(figure, "other metrics")))
    constant = P.constant_rows(rows, [k for k in _numeric_keys(rows) if k != "iteration"])
    if constant:
        note = _note("Metrics with one value over the run (or one iteration): not plotted.")
        sections.append(("Unchanged over the run", note + table_html(constant)))
    return sections


def _flat_success(rows: list[dict[str, Any]]) -> str:
    """What stands for a success plot with one value: the value, and where."""
    values = {r["success_rate"] for r in rows if P.finite(r.get("success_rate"))}
    if len(rows) == 1:
        return "One iteration (the BC warm start): its success is in the headline."
    if len(values) == 1:
        return (
            f"Success {values.pop():.2f} at every iteration 0–{rows[-1]['iteration']}: "
            "a flat line would say no more (see the headline for its interval)."
        )
    return "No success rate recorded."


def _numeric_keys(rows: list[dict[str, Any]]) -> list[str]:
    keys = dict.fromkeys(k for r in rows for k in r)
    return [k for k in keys if any(P.finite(r.get(k)) for r in rows)]


def _effort_html(run_dir: Path, rows: list[dict[str, Any]]) -> str:
    reasons = _failure_reasons(run_dir)
    fig = P.effort_figure(rows, reasons)
    note = _note(
        "Operator steps at iteration 0 are its demonstrations; later, its corrections after "
        "a takeover. Failures: the policy fragments cut by a failure, by the reason recorded."
    )
    return note + _figure_or(fig, "operator effort", "The operator's figures do not vary.")


def _failure_reasons(run_dir: Path) -> dict[int, dict[str, int]] | None:
    """Iteration -> failure reason -> count, from the run's store; None if unreadable."""
    try:
        episodes = EpisodeStore.open(run_dir / "dataset").episodes().to_pylist()
    except Exception:  # noqa: BLE001 (a report reads what it can)
        return None
    out: dict[int, dict[str, int]] = {}
    for e in episodes:
        by = out.setdefault(int(e["iteration"]), {})
        for reason in e.get("failure_reasons") or []:
            by[reason] = by.get(reason, 0) + 1
    return out if any(out.values()) else None


def _evaluations_html(basic: dict[str, Any] | None, full: dict[str, Any] | None) -> str:
    """One line per evaluation file: which exists, what it says."""
    rows: list[dict[str, Any]] = []
    for name, command, ev in (
        (BASIC_EVAL, "aloe eval", basic),
        (FULL_EVAL, "aloe eval --suite full", full),
    ):
        if ev is None:
            rows.append({"file": name, "command": command, "result": "not run yet"})
            continue
        m = ev.get("nominal") or ev
        ok = P.finite(m.get("success_rate")) and m.get("episodes")
        result = _interval(m["success_rate"], m["episodes"]) if ok else "–"
        rows.append(
            {
                "file": name,
                "command": command,
                "iteration": ev.get("iteration"),
                "episodes": m.get("episodes"),
                "result": f"success {result}",
                "steps to success": m.get("mean_steps_to_success"),
            }
        )
    cols = ("file", "command", "iteration", "episodes", "result", "steps to success")
    return table_html(rows, cols)


def _config_html(config: dict[str, Any]) -> str:
    rows = [{"field": k, "value": config.get(k)} for k in CONFIG_FIELDS if k in config]
    for group, key in (("aloe", "beta"), ("optim", "gamma"), ("aloe", "gamma")):  # γ: old runs'
        part = config.get(group) or {}
        if key in part:
            rows.append({"field": f"{group}.{key}", "value": part[key]})
    return table_html(rows)


def _raw_html(rows: list[dict[str, Any]]) -> str:
    """Every metrics.jsonl column, one row per iteration, collapsed."""
    flat = [{k: v for k, v in r.items() if not isinstance(v, dict)} for r in rows]
    summary = f"metrics.jsonl: {len(rows)} rows × {len(flat[0]) if flat else 0} columns"
    return details_html(summary, table_html(flat))


def _by_task_html(rows: list[dict[str, Any]]) -> str | None:
    """A multi-task run's evaluation per task: success at each iteration, final steps."""
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


def _weights_html(ev: dict[str, Any]) -> str:
    note = _note(
        "Chunks drawn from the buffer as training draws them; weights exp(clip(A/β)) "
        "(Eq. 11) from the checkpoint's critic."
    )
    by_source = ev["weights_by_source"]
    fig = P.weights_figure(by_source)
    rows = [{"source": k, **v} for k, v in by_source.items()]
    outcome = [
        {"policy chunk": k, **v} for k, v in (ev.get("weights_by_policy_outcome") or {}).items()
    ]
    split = (
        _note(
            "The policy's chunks by how their fragment ended (shares of the whole buffer's "
            "weight). HG-DAgger never imitates the first two."
        )
        + table_html(outcome)
        if outcome
        else ""
    )
    figure = "" if fig is None else figure_html(fig, "weights by source")
    return note + figure + table_html(rows) + split


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
    if ev.get("action_ope"):
        sections.append(
            (
                "Action-level OPE: chunks ranked at one state",
                action_ope_html(run_dir, ev["action_ope"]),
            )
        )
    return sections


def _speed_row(name: str, m: dict[str, Any]) -> dict[str, Any]:
    row = {"condition": name, **m}
    ci = m.get("success_ci95")
    row["success_ci95"] = f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else None
    reasons = m.get("failure_reasons") or {}
    row["failure_reasons"] = ", ".join(f"{k} ×{v}" for k, v in reasons.items())
    return row

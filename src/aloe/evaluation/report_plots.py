"""The figures of a run's report, one per question a reader asks, from metrics.jsonl rows.

    success_figure    did the policy get better? success per iteration, 95 % Wilson interval
    effort_figure     how much did the operator do? takeovers, operator steps, failures
    panels_figure     any group of metrics (the critic's health, the actor's weights, ...)
    weights_figure    which data does the actor imitate? rows and weight shares by source

Two rules hold for every figure: each axis is labelled with its unit, and a series with
fewer than two points or one distinct value is never drawn (`plottable`); the report lists
it in a table instead (`constant_rows`).

matplotlib is imported by the functions that draw: only plots need it, and it is slow to
import.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from aloe.evaluation.metrics import wilson_interval

ITERATION = "iteration (0 = BC warm start)"
SPREAD = "q_spread"  # derived by the report: Q ensemble mean − Q_pess, the members' spread

# metrics.jsonl column -> (panel title, y-axis label with its unit)
LABELS: dict[str, tuple[str, str]] = {
    "success_rate": ("success rate", "success rate (fraction of episodes)"),
    "mean_steps_to_success": ("steps to success", "steps (successful episodes)"),
    "eval_episodes": ("evaluation episodes", "episodes"),
    "episodes": ("episodes collected", "episodes"),
    "env_steps": ("environment steps collected", "steps"),
    "human_steps": ("operator steps", "steps"),
    "policy_steps": ("policy steps collected", "steps"),
    "takeovers": ("takeovers", "takeovers (count)"),
    "collect_successes": ("successful collected episodes", "episodes"),
    "total_env_steps": ("environment steps (cumulative)", "steps"),
    "total_human_steps": ("operator steps (cumulative)", "steps"),
    "bc_loss": ("BC loss (Eq. 16)", "flow-matching loss (unitless)"),
    "critic_loss": ("critic TD loss (Eq. 7–8)", "TD loss (return²)"),
    "q_mean": ("Q, ensemble mean", "Q (return units)"),
    "q_pess_mean": ("Q_pess (Eq. 9)", "Q (return units)"),
    "v_mean": ("V^π (Eq. 10)", "V (return units)"),
    SPREAD: ("ensemble spread", "Q mean − Q_pess (return units)"),
    "advantage_mean": ("advantage, mean", "A (return units)"),
    "advantage_std": ("advantage, std", "A (return units)"),
    "weight_mean": ("actor weight, mean (Eq. 11)", "weight exp(A/β) (unitless)"),
    "weight_max": ("actor weight, max (Eq. 11)", "weight exp(A/β) (unitless)"),
    "weight_clipped_frac": ("weights clipped", "fraction of chunks"),
    "actor_flow_loss": ("actor flow loss (Eq. 15)", "weighted flow loss (unitless)"),
    "positive_frac": ("positive, all rows", "share of rows labelled positive"),
    "positive_demo_frac": ("positive, demonstrations", "share of rows labelled positive"),
    "positive_policy_frac": ("positive, policy", "share of rows labelled positive"),
    "positive_human_frac": ("positive, operator", "share of rows labelled positive"),
    "advantage_threshold": ("ε_ℓ, mean over tasks", "A (return units)"),
    "indicator_dropped_frac": ("indicator dropped", "fraction of chunks"),
    "wall_s": ("wall time", "seconds"),
    "broadcast_s": ("weight broadcast", "seconds"),
}


def label(key: str) -> tuple[str, str]:
    """(title, y label) of a metric: LABELS', or for a column it does not know, the name
    read as words and a unit read from its suffix (`_s` seconds, `_frac` fraction)."""
    if key in LABELS:
        return LABELS[key]
    words = key.replace("/", " ").replace("_", " ")
    if key.endswith("_s"):
        return words[:-2], "seconds"
    if key.endswith("_frac"):
        return words[:-5], "fraction"
    if "steps" in key:
        return words, "steps"
    return words, f"{words} (as logged)"


def finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def series(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(iterations, values) of a column, where the value is a finite number."""
    pairs = [(r["iteration"], float(r[key])) for r in rows if finite(r.get(key))]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def plottable(values: Sequence[float]) -> bool:
    """Worth a plot: at least two points, and more than one distinct value."""
    return len(values) >= 2 and len(set(values)) > 1


def constant_rows(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """A table row for each column that is not `plottable`: its one value and where."""
    out = []
    for key in keys:
        xs, ys = series(rows, key)
        if ys and not plottable(ys):
            where = f"iteration {xs[0]}" if len(xs) == 1 else f"iterations {xs[0]}–{xs[-1]}"
            out.append({"metric": label(key)[0], "column": key, "value": ys[0], "at": where})
    return out


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _iteration_axis(ax: Any, xs: Sequence[int]) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel(ITERATION)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(min(xs) - 0.5, max(xs) + 0.5)
    ax.grid(alpha=0.3)


def robot_rows(rows: Sequence[dict[str, Any]]) -> bool:
    """A robot run's rows (`aloe.train.robot_success`): no evaluation, their success is of
    the iteration's robot episodes."""
    return bool(rows) and rows[-1].get("success_source") == "robot"


def success_episodes(row: dict[str, Any]) -> int:
    """The episodes a row's success rate is of: its evaluation's, or a robot run's own."""
    return int(row.get("episodes" if robot_rows([row]) else "eval_episodes") or 0)


def success_figure(rows: Sequence[dict[str, Any]]) -> Any | None:
    """Success rate per iteration with the 95 % Wilson interval of its evaluation episodes;
    None when there is nothing to compare (one iteration, or one value throughout)."""
    pairs = [
        (r["iteration"], r["success_rate"], success_episodes(r))
        for r in rows
        if finite(r.get("success_rate"))
    ]
    if not plottable([p[1] for p in pairs]):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    xs = [p[0] for p in pairs]
    ys = [p[1] for p in pairs]
    bounds = [wilson_interval(round(y * n), n) if n else (y, y) for _, y, n in pairs]
    low = [y - b[0] for y, b in zip(ys, bounds, strict=True)]
    high = [b[1] - y for y, b in zip(ys, bounds, strict=True)]
    ax.errorbar(xs, ys, yerr=[low, high], fmt="o-", capsize=4, color="tab:blue")
    ax.set_ylabel("success rate (fraction of episodes)")
    ax.set_ylim(-0.03, 1.03)
    _iteration_axis(ax, xs)
    sizes = sorted({p[2] for p in pairs})
    what = "success on the robot, no takeover" if robot_rows(rows) else "evaluation success"
    ax.set_title(
        f"{what}, 95 % Wilson interval ({'/'.join(map(str, sizes))} episodes)", fontsize=10
    )
    fig.tight_layout()
    return fig


def effort_figure(
    rows: Sequence[dict[str, Any]], reasons: dict[int, dict[str, int]] | None
) -> Any | None:
    """The operator's work per iteration: operator steps (demonstrations at 0, corrections
    after), takeovers, and the failures that caused them by reason (from the store's
    episodes, where recorded). Panels with nothing to compare are left out; None if all."""
    panels: list[Any] = []
    xs, steps = series(rows, "human_steps")
    if plottable(steps):
        panels.append(("operator steps per iteration", "operator steps", xs, {"": steps}))
    later = [r for r in rows if r["iteration"] > 0]
    xs, takeovers = series(later, "takeovers")
    if plottable(takeovers):
        panels.append(("takeovers per iteration", "takeovers (count)", xs, {"": takeovers}))
    if reasons:
        its = sorted(reasons)
        names = sorted({n for by in reasons.values() for n in by})
        stacked = {n: [float(reasons[k].get(n, 0)) for k in its] for n in names}
        totals = [sum(by.values()) for by in (reasons[k] for k in its)]
        if plottable([float(t) for t in totals]) or len(names) > 1:
            panels.append(("failures by reason", "failed fragments (count)", its, stacked))
    if not panels:
        return None
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, (title, ylabel, its, stacks) in zip(axes[0], panels, strict=True):
        bottom = [0.0] * len(its)
        for name, values in stacks.items():
            ax.bar(its, values, bottom=bottom, label=name or None)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        if any(stacks):  # failure reasons: named, even one, below the axes (not on the bars)
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0.0, -0.22), frameon=False)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        _iteration_axis(ax, its)
    fig.tight_layout()
    return fig


def panels_figure(
    rows: Sequence[dict[str, Any]], groups: Sequence[tuple[str, Sequence[str]]]
) -> Any | None:
    """One panel per (title, columns) group, each column a line over iterations; columns
    that are not `plottable` are left out, and panels left empty; None if all are."""
    drawn = []
    for title, keys in groups:
        lines = [(k, *series(rows, k)) for k in keys]
        lines = [line for line in lines if plottable(line[2])]
        if lines:
            drawn.append((title, lines))
    if not drawn:
        return None
    plt = _pyplot()
    cols = min(3, len(drawn))
    nrows = math.ceil(len(drawn) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.1 * nrows), squeeze=False)
    for ax, (title, lines) in zip(axes.flat, drawn, strict=False):
        for key, xs, ys in lines:
            ax.plot(xs, ys, "o-", ms=4, label=label(key)[0])
        if len(lines) > 1:
            ax.legend(fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(label(lines[0][0])[1])
        _iteration_axis(ax, [x for _, xs, _ in lines for x in xs])
    for ax in list(axes.flat)[len(drawn) :]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def weights_figure(by_source: dict[str, dict[str, Any]]) -> Any | None:
    """Each source's share of the buffer's chunks beside its share of the actor's weight:
    which data the actor imitates more (or less) than it is present."""
    sources = [s for s, v in by_source.items() if finite(v.get("rows"))]
    if len(sources) < 2:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    xs = range(len(sources))
    rows = [by_source[s]["rows"] for s in sources]
    weight = [by_source[s].get("weight_share") or 0.0 for s in sources]
    ax.bar([x - 0.2 for x in xs], rows, width=0.4, label="share of chunks")
    ax.bar([x + 0.2 for x in xs], weight, width=0.4, label="share of actor weight (Eq. 11)")
    ax.set_xticks(list(xs), sources)
    ax.set_xlabel("data source")
    ax.set_ylabel("fraction of the buffer")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig

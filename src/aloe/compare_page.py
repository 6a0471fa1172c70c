"""The page of `aloe compare`: report.html from summary.json, the paper's figures and a table.

Every figure is embedded as PNG (aloe.report), so the page is one self-contained file.
matplotlib is imported by the functions that draw: only plots need it, and it is slow to
import.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import numpy as np

from aloe.algos.table import ALGORITHMS
from aloe.evaluation.report_plots import plottable
from aloe.progress import duration
from aloe.report import details_html, figure_html, table_html, write_page


def _label(algo: str) -> str:
    return ALGORITHMS[algo].label if algo in ALGORITHMS else algo


def _color(algo: str) -> Any:
    import matplotlib.pyplot as plt

    return plt.get_cmap("tab10")(list(ALGORITHMS).index(algo) if algo in ALGORITHMS else 9)


def _band(ax: Any, algo: str, x: list[Any], mean: list[Any], std: list[Any]) -> None:
    keep = [i for i, m in enumerate(mean) if m is not None and x[i] is not None]
    xs = np.array([x[i] for i in keep], dtype=float)
    m = np.array([mean[i] for i in keep], dtype=float)
    sd = np.array([std[i] or 0.0 for i in keep], dtype=float)
    ax.plot(xs, m, "o-", color=_color(algo), label=_label(algo))
    ax.fill_between(xs, m - sd, m + sd, color=_color(algo), alpha=0.15)


def _success_per_iteration(algos: dict[str, Any]) -> Any:
    """The paper's Fig. 6: success rate after each iteration, mean ± std over seeds."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6.4, 4))
    last = max((len(a["iterations"]) for a in algos.values()), default=1) - 1
    for algo, a in algos.items():
        if len(a["iterations"]) == 1 and a["success_mean_per_iteration"][0] is not None:
            y = a["success_mean_per_iteration"][0]  # BC: the warm start, drawn across
            ax.hlines(
                y, 0, max(last, 1), colors=[_color(algo)], linestyles="--", label=_label(algo)
            )
        else:
            _band(
                ax,
                algo,
                a["iterations"],
                a["success_mean_per_iteration"],
                a["success_std_per_iteration"],
            )
    ax.set(
        xlabel="iteration (0 = BC warm start)",
        ylabel="success rate (fraction of episodes)",
        ylim=(-0.02, 1.02),
    )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def _final_bars(algos: dict[str, Any]) -> Any:
    """The paper's Fig. 4: final success rate per algorithm, mean ± std over seeds."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    names = list(algos)
    means = [algos[a]["final_success"] or 0.0 for a in names]
    stds = [algos[a]["final_success_std"] or 0.0 for a in names]
    ax.bar(
        [_label(a) for a in names], means, yerr=stds, capsize=4, color=[_color(a) for a in names]
    )
    ax.set(xlabel="algorithm", ylabel="final success rate (fraction of episodes)", ylim=(0, 1.05))
    ax.grid(axis="y", alpha=0.3)
    return fig


def _steps_to_success_per_iteration(algos: dict[str, Any]) -> Any:
    """Steps to success after each iteration (the second seed's headline figure): the mean
    episode length of the successful evaluation episodes, mean ± std over seeds."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for algo, a in algos.items():
        means = a.get("steps_to_success_mean_per_iteration") or []
        if any(m is not None for m in means):
            _band(ax, algo, a["iterations"], means, a["steps_to_success_std_per_iteration"])
    ax.set(
        xlabel="iteration (0 = BC warm start)",
        ylabel="steps to success (steps, successful episodes)",
    )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def _success_versus(algos: dict[str, Any], key: str, xlabel: str) -> Any:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for algo, a in algos.items():
        _band(ax, algo, a[key], a["success_mean_per_iteration"], a["success_std_per_iteration"])
    ax.set(xlabel=xlabel, ylabel="success rate (fraction of episodes)", ylim=(-0.02, 1.02))
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def _pm(mean: float | None, std: float | None, digits: int = 2) -> str:
    return "–" if mean is None else f"{mean:.{digits}f} ± {std or 0.0:.{digits}f}"


def _int(x: float | None) -> int | None:
    return None if x is None else round(x)


def _table_rows(algos: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "algorithm": _label(algo),
            "seeds (finished)": f"{len(a['finished_seeds'])}/{len(a['seeds'])}",
            "final success": _pm(a["final_success"], a["final_success_std"]),
            "operator steps": _int(a["operator_steps"]),
            "success per 1k operator steps": a.get("success_per_1k_operator_steps"),
            "final eval episodes": _int(a.get("final_eval_episodes")),
            "env steps": _int(a["env_steps"]),
            "steps to success": _pm(
                a["mean_steps_to_success"], a.get("mean_steps_to_success_std"), digits=1
            ),
            "wall time (min)": None if a["wall_s"] is None else a["wall_s"] / 60,
        }
        for algo, a in algos.items()
    ]


def _task_rows(algos: dict[str, Any]) -> list[dict[str, Any]]:
    """A row per task of a multi-task comparison: each algorithm's final success and steps to
    success (mean over seeds), then the average over tasks. Empty for one task."""
    tasks = sorted({t for a in algos.values() for t in a.get("success_by_task") or {}})
    if len(tasks) < 2:
        return []

    def cells(task: str | None) -> dict[str, Any]:
        row: dict[str, Any] = {"task": task or "average over tasks"}
        for algo, a in algos.items():
            for key, name in (
                ("success_by_task", "success"),
                ("steps_to_success_by_task", "steps to success"),
            ):
                by = a.get(key) or {}
                values = [by.get(t) for t in ([task] if task else tasks)]
                ok = [v for v in values if v is not None]
                row[f"{_label(algo)}: {name}"] = float(np.mean(ok)) if ok else None
        return row

    return [cells(t) for t in tasks] + [cells(None)]


def _action_ope_rows(algos: dict[str, Any]) -> list[dict[str, Any]]:
    """A row per algorithm with an action-level OPE: the critic's within-state Spearman,
    overall and per source, the sign of A and the weights against the truth (mean ± std
    over seeds). Empty when no run has one; an algorithm scored by its labels alone (RECAP
    with `advantage value`: no chunked Q) is left to `_indicator_rows`."""
    rows = []
    for algo, a in algos.items():
        ope = a.get("action_ope")
        if not ope or all(ope.get(k) is None for k in ("within_state_spearman", "sign_accuracy")):
            continue
        row: dict[str, Any] = {"algorithm": _label(algo), "seeds": ope["seeds"]}
        row |= _by_source(ope, "within_state_spearman", "within-state Spearman")
        row["sign of A right"] = _score(ope, "sign_accuracy")
        row["weights vs true A (Spearman)"] = _score(ope, "weights_spearman")
        rows.append(row)
    return rows


def _indicator_rows(algos: dict[str, Any]) -> list[dict[str, Any]]:
    """A row per algorithm whose action-level OPE scored its labels (RECAP's indicator):
    agreement with the truth's indicator, overall and per source, the agreement of chance
    and the sign of its A (mean ± std over seeds). Empty when no run has one."""
    rows = []
    for algo, a in algos.items():
        ope = a.get("action_ope") or {}
        if ope.get("indicator_agreement") is None:
            continue
        row: dict[str, Any] = {"algorithm": _label(algo), "seeds": ope["seeds"]}
        row["rows"] = _int(ope.get("indicator_n"))
        row |= _by_source(ope, "indicator_agreement", "agrees")
        row["chance"] = _score(ope, "indicator_chance")
        row["sign of A right"] = _score(ope, "indicator_sign_agreement")
        rows.append(row)
    return rows


def _score(ope: dict[str, Any], key: str) -> str:
    """A summary's score as mean ± std over seeds."""
    return _pm(ope.get(key), ope.get(f"{key}_std"))


def _by_source(ope: dict[str, Any], key: str, name: str) -> dict[str, str]:
    """`name: all`, `name: policy`, ... -> the score overall and per source."""
    sources = (("", "all"), ("policy_", "policy"), ("human_", "human"), ("demo_", "demo"))
    return {f"{name}: {source}": _score(ope, f"{prefix}{key}") for prefix, source in sources}


def _values(algos: dict[str, Any], key: str) -> list[float]:
    """Every finite value of a per-algorithm list (or number) `key`, over all algorithms."""
    out: list[float] = []
    for a in algos.values():
        v = a.get(key)
        for x in v if isinstance(v, list) else [v]:
            if isinstance(x, int | float) and math.isfinite(x):
                out.append(float(x))
    return out


def _same_final(finals: list[float]) -> str:
    return f"every algorithm ends at {finals[0]:.2f}" if finals else "no final success"


def _figures(algos: dict[str, Any]) -> list[tuple[str, str]]:
    """The paper's figures, each only where its values vary (over iterations and
    algorithms); a figure of one value is a line of text saying that value."""
    success = _values(algos, "success_mean_per_iteration")
    finals = _values(algos, "final_success")
    steps = _values(algos, "steps_to_success_mean_per_iteration")
    flat = f"every algorithm's success is {success[0]:.2f} at every iteration" if success else ""
    figures = [
        ("Success per iteration (Fig. 6)", success, _success_per_iteration, flat),
        ("Final success (Fig. 4)", finals, _final_bars, _same_final(finals)),
        (
            "Steps to success per iteration",
            steps,
            _steps_to_success_per_iteration,
            "no evaluation episode succeeded" if not steps else "one value throughout",
        ),
    ]
    sections = []
    for title, values, draw, otherwise in figures:
        body = (
            figure_html(draw(algos), title)
            if plottable(values)
            else f'<p class="note">Not plotted: {otherwise or "no values"}.</p>'
        )
        sections.append((title, body))
    if plottable(success):
        for title, key, xlabel in (
            (
                "Success per operator step",
                "operator_steps_per_iteration",
                "operator steps (cumulative)",
            ),
            (
                "Success per environment step",
                "env_steps_per_iteration",
                "environment steps (cumulative)",
            ),
        ):
            fig = _success_versus(algos, key, xlabel)
            sections.append((title, figure_html(fig, title)))
    return sections


def _headline(algos: dict[str, Any]) -> str:
    """Each algorithm's start (iteration 0) → final success, operator steps, wall time."""
    parts = []
    effort = []
    for algo, a in algos.items():
        start = (a.get("success_mean_per_iteration") or [None])[0]
        final = _pm(a["final_success"], a["final_success_std"])
        arrow = (
            f"{start:.2f} → {final}" if start is not None and len(a["iterations"]) > 1 else final
        )
        parts.append(f"<b>{html.escape(_label(algo))}</b> {arrow}")
        wall = "–" if a["wall_s"] is None else duration(a["wall_s"])
        effort.append(f"{html.escape(_label(algo))} {_int(a['operator_steps'])} steps, {wall}")
    seeds = max((len(a["seeds"]) for a in algos.values()), default=0)
    counts = (_int(a.get("final_eval_episodes")) for a in algos.values())
    episodes = {n for n in counts if n is not None}
    return (
        '<div class="headline">'
        f"<p class='big'>Success {' · '.join(parts)}</p>"
        f"<p>BC warm start (iteration 0) → final, mean ± std over {seeds} seeds"
        + (
            f" of {'/'.join(map(str, sorted(episodes)))} final evaluation episodes each"
            if episodes
            else ""
        )
        + "</p>"
        f"<p><b>Operator steps and wall time</b> {' · '.join(effort)}</p></div>"
    )


def _raw(algos: dict[str, Any]) -> str:
    """Every per-iteration figure of summary.json, one row per algorithm and iteration."""
    rows = []
    for algo, a in algos.items():
        lists = {k: v for k, v in a.items() if k.endswith("_per_iteration")}
        for i, k in enumerate(a["iterations"]):
            row: dict[str, Any] = {"algorithm": _label(algo), "iteration": k}
            row |= {name.removesuffix("_per_iteration"): v[i] for name, v in lists.items()}
            rows.append(row)
    return details_html(f"summary.json: {len(rows)} rows", table_html(rows))


def build_page(summary: dict[str, Any], path: Path) -> Path:
    """report.html from a summary: the headline, the figures whose values vary, the
    tables, and the raw per-iteration figures collapsed; nothing external."""
    import matplotlib

    matplotlib.use("Agg")

    algos = summary["algos"]
    note = (
        '<p class="note">Mean ± std over seeds. Operator steps: demonstration and correction '
        "steps; env steps: all collection steps (evaluation excluded). PPO+SBC runs without "
        "the operator after the warm start. Wall time counts training and evaluation of a run "
        "while other runs shared the machine.</p>"
    )
    sections = [*_figures(algos), ("Summary", table_html(_table_rows(algos)) + note)]
    tasks = _task_rows(algos)
    if tasks:
        sections.append(("Per task (final iteration)", table_html(tasks)))
    ope = _action_ope_rows(algos)
    if ope:
        ope_note = (
            '<p class="note">At buffer states of each source, the critic ranks π\'s '
            "chunks and the data chunk against their true Q^π from restored rollouts "
            "(aloe eval --suite action-ope, last checkpoint). 1 is a perfect ranking, "
            "0 chance.</p>"
        )
        sections.append(("Action-level OPE (final checkpoint)", table_html(ope) + ope_note))
    indicator = _indicator_rows(algos)
    if indicator:
        indicator_note = (
            '<p class="note">At the same states, the run\'s improvement indicator '
            "I = 1[A > ε_ℓ] (its last labels' threshold; the operator's rows positive) "
            "against the truth's 1[A_true > ε_true], ε_true the same percentile of the true "
            "advantages over the sampled rows outside the operator's. Chance: the agreement "
            "of independent labels with the two positive shares. Sign of A: A > 0 exactly "
            "when A_true > 0.</p>"
        )
        sections.append(
            ("Improvement indicator against the truth", table_html(indicator) + indicator_note)
        )
    sections.append(("Raw figures", _raw(algos)))
    title = f"aloe compare: {summary.get('task')} ({summary.get('preset')} preset)"
    return write_page(path, title, sections, lead=_headline(algos))

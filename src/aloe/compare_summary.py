"""A comparison's summary.json (each algorithm's runs aggregated over seeds) and its
report.html (`aloe.compare_page`), rebuilt from the run directories by `aloe report DIR`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from aloe.compare_dir import (
    REPORT,
    SETTINGS,
    SUMMARY,
    discover,
    read_json,
    read_metrics,
    read_optional,
    run_state,
    seed_of,
)
from aloe.compare_page import build_page
from aloe.errors import bad
from aloe.evaluation.action_ope import ACTION_OPE_FILE


def _stats(values: list[float | None]) -> tuple[float | None, float | None]:
    ok = [v for v in values if v is not None and math.isfinite(v)]
    return (float(np.mean(ok)), float(np.std(ok))) if ok else (None, None)


def _per_1k(row: dict[str, Any]) -> float:
    """Success bought per 1000 operator steps: what a person's time buys (NaN without any)."""
    steps = row["total_human_steps"]
    return 1000 * row["success_rate"] / steps if steps else math.nan


def summarize_algo(runs: list[Path]) -> dict[str, Any]:
    """One algorithm's runs aggregated over seeds (iteration k over the runs that have it)."""
    metrics = {seed_of(r): read_metrics(r) for r in runs}
    finished = [seed_of(r) for r in runs if run_state(r).finished]
    longest = max((len(m) for m in metrics.values()), default=0)
    per_iter: dict[str, list[Any]] = {
        k: []
        for k in (
            "success_mean",
            "success_std",
            "steps_to_success_mean",
            "steps_to_success_std",
            "seeds",
            "operator_steps",
            "env_steps",
        )
    }
    for k in range(longest):
        rows = [m[k] for m in metrics.values() if len(m) > k]
        mean, std = _stats([r["success_rate"] for r in rows])
        per_iter["success_mean"].append(mean)
        per_iter["success_std"].append(std)
        steps, steps_std = _stats([r["mean_steps_to_success"] for r in rows])
        per_iter["steps_to_success_mean"].append(steps)
        per_iter["steps_to_success_std"].append(steps_std)
        per_iter["seeds"].append(len(rows))
        per_iter["operator_steps"].append(_stats([r["total_human_steps"] for r in rows])[0])
        per_iter["env_steps"].append(_stats([r["total_env_steps"] for r in rows])[0])
    final = [metrics[s][-1] for s in finished]
    success, success_std = _stats([r["success_rate"] for r in final])
    steps, steps_std = _stats([r["mean_steps_to_success"] for r in final])
    return {
        "seeds": sorted(metrics),
        "finished_seeds": sorted(finished),
        "iterations": list(range(longest)),
        **{
            f"{k}_per_iteration" if k != "seeds" else "seeds_per_iteration": v
            for k, v in per_iter.items()
        },
        "final_success": success,
        "final_success_std": success_std,
        "operator_steps": _stats([r["total_human_steps"] for r in final])[0],
        "success_per_1k_operator_steps": _stats([_per_1k(r) for r in final])[0],
        "final_eval_episodes": _stats([r.get("eval_episodes", math.nan) for r in final])[0],
        "env_steps": _stats([r["total_env_steps"] for r in final])[0],
        "mean_steps_to_success": steps,
        "mean_steps_to_success_std": steps_std,
        **_by_task(final),
        "wall_s": _stats([sum(x["wall_s"] for x in metrics[s]) for s in finished])[0],
        "action_ope": _action_ope_stats([r for r in runs if seed_of(r) in finished]),
    }


ACTION_OPE_SCORES = (
    "within_state_spearman",
    "sign_accuracy",
    "weights_spearman",
    "indicator_agreement",  # a run's labels against the truth's (aloe.evaluation.indicator)
    "indicator_chance",
    "indicator_sign_agreement",
    "indicator_n",
)


def _action_ope_stats(runs: list[Path]) -> dict[str, Any] | None:
    """The action-level OPE of the finished runs (DIR/action_ope.json), mean and std over
    the seeds that have one: each score overall and per source (`policy_within_state_
    spearman`, ...); None when no run has one."""
    found = [e for r in runs if (e := read_optional(r / ACTION_OPE_FILE)) and e.get("applicable")]
    if not found:
        return None
    out: dict[str, Any] = {"seeds": len(found)}
    sources = sorted({s for e in found for s in e.get("by_source") or {}})
    for source in [None, *sources]:
        scores = [
            e if source is None else (e.get("by_source") or {}).get(source) or {} for e in found
        ]
        prefix = "" if source is None else f"{source}_"
        for key in ACTION_OPE_SCORES:
            mean, std = _stats([sc.get(key) for sc in scores])
            out[f"{prefix}{key}"], out[f"{prefix}{key}_std"] = mean, std
    return out


def _by_task(final: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Final success and steps to success of each task (a multi-task run's, e.g. MT10),
    mean over the seeds: {"success_by_task": {task: mean}, "steps_to_success_by_task": ...}.
    Steps to success average over a task's successful episodes; None where none succeeded."""
    out: dict[str, dict[str, Any]] = {}
    for key in ("success_by_task", "steps_to_success_by_task"):
        tasks = sorted({t for r in final for t in r.get(key) or {}})
        out[key] = {t: _stats([(r.get(key) or {}).get(t) for r in final])[0] for t in tasks}
    return out


def summarize(root: Path) -> dict[str, Any]:
    """summary.json's content, from the run directories under root/runs."""
    settings = root / SETTINGS
    head = json.loads(settings.read_text()) if settings.is_file() else {}
    algos = {a: summarize_algo(runs) for a, runs in discover(root).items()}
    return {
        "task": head.get("task"),
        "preset": head.get("preset"),
        "train_args": head.get("train_args", ""),
        "algos": algos,
    }


def write_report(root: Path) -> dict[str, Any]:
    """(Re)build summary.json (from the runs under runs/ when there are any) and report.html;
    returns the summary. With neither runs nor summary.json: a UsageError, nothing written."""
    root = Path(root)
    if discover(root):
        summary = summarize(root)
        tmp = root / (SUMMARY + ".tmp")
        tmp.write_text(json.dumps(summary, indent=1))
        os.replace(tmp, root / SUMMARY)
    elif (root / SUMMARY).is_file():
        summary = read_json(root / SUMMARY, "comparison")
    else:
        raise bad(
            "comparison", root, f"has no runs under runs/ and no {SUMMARY}: nothing to report yet"
        )

    build_page(summary, root / REPORT)
    return summary

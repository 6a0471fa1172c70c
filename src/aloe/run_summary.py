"""What a run says as it goes and when it ends, for the person reading stderr.

    banner          the opening lines of `aloe train`: where the run is written, what each
                    iteration does and how long the run should take
    iteration_line  one line per iteration: its success, the operator's work, its duration
                    and, measured on the iterations so far, the time left
    summary         the closing lines of `aloe train`: success per iteration as a sparkline
                    and numbers, BC → final success, the operator's steps, wall time, and
                    where the report, the latest checkpoint and the TensorBoard logs are

metrics.jsonl is the machine-readable record; nothing here is meant to be parsed.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aloe import checkpoint
from aloe.algos.table import ALGORITHMS
from aloe.config import preset
from aloe.envs.registry import simulated
from aloe.progress import duration, plural

SPARKS = "▁▂▃▄▅▆▇█"
MAX_LISTED = 12  # success rates written out in full; beyond that the first and last few


def sparkline(rates: Sequence[float]) -> str:
    """Success rates in [0, 1] as bars on a fixed scale (▁ = 0, █ = 1); `·` for no value."""
    top = len(SPARKS) - 1
    return "".join(SPARKS[min(top, max(0, round(r * top)))] if _finite(r) else "·" for r in rates)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _rate(value: Any) -> str:
    return f"{value:.2f}" if _finite(value) else "–"


# What a preset's run took, measured on this project's reference machine (README), keyed by
# (preset, task, algorithm); a run with other sizes has no measured figure.
MEASURED = {
    ("smoke", "pick-place-v3", "aloe"): "about 1 min",
    ("default", "pick-place-v3", "aloe"): "about 10–20 min",
}
MEASURED_ON = "2 otherwise idle CPU cores; README"
_RUN_ONLY = ("out", "seed", "device", "progress")  # fields that leave the run's sizes alone


def measured_duration(cfg: Any) -> str | None:
    """The preset's measured duration, if `cfg` is that preset's config (any seed, device)."""
    figure = MEASURED.get((cfg.preset, cfg.task, cfg.algo))
    if figure is None:
        return None
    same = {k: getattr(cfg, k) for k in _RUN_ONLY}
    base = dataclasses.replace(preset(cfg.preset, cfg.task), algo=cfg.algo, **same)
    mine = json.loads(dataclasses.replace(cfg, **same).resolved().to_json())
    return figure if json.loads(base.resolved().to_json()) == mine else None


def banner(cfg: Any, label: str, iterates: bool, own_collect: bool, start: int) -> str:
    """The opening lines of `aloe train`: the run directory, what iteration 0 and each later
    iteration do (`label` names the algorithm; `own_collect`: it collects without the
    operator), the estimated duration, and how to stop and continue."""
    out = Path(cfg.out)
    evals = f"evaluate on {plural(cfg.eval_episodes, 'episode')}"
    head = f"aloe train: {out}: {label} on {cfg.task}, preset {cfg.preset}, seed {cfg.seed}"
    if start:
        head += f" (resuming at iteration {start})"
    if not simulated(cfg.task):
        return "\n".join([head, *_robot_lines(cfg, label, iterates)])
    lines = [
        head,
        f"  iteration 0    {_demos(cfg)} → {plural(cfg.bc_steps, 'BC step')} → {evals} → "
        "checkpoint",
    ]
    if iterates:
        who = (
            "its own rollouts (no operator)"
            if own_collect
            else "π acts, the operator takes over when it fails"
        )
        last = f", {cfg.final_eval_episodes} at the last" if cfg.final_eval_episodes else ""
        lines.append(
            f"  iterations 1–{cfg.iterations} collect ({who}) → {label} update → {evals}"
            f"{last} → checkpoint"
        )
    figure = measured_duration(cfg)
    lines.append(
        f"  estimate       {figure} (the {cfg.preset} preset's measured figure, {MEASURED_ON})"
        if figure
        else "  estimate       no measured figure for these sizes: each iteration's line "
        "gives the time left, measured on the iterations so far"
    )
    lines.append(
        f"  stop           Ctrl-C; `aloe train --resume {out}` continues from the last checkpoint"
    )
    return "\n".join(lines)


def _robot_lines(cfg: Any, label: str, iterates: bool) -> list[str]:
    """What a robot run does in each call of `aloe train` (aloe.train's docstring)."""
    lines = [f"  iteration 0    {_demos(cfg)} → {plural(cfg.bc_steps, 'BC step')} → checkpoint"]
    if iterates:
        lines.append(
            f"  iterations 1–{cfg.iterations} one per `aloe train --resume {cfg.out}`: the "
            f"robot's episodes of it (`aloe robot` through `aloe serve`) → {label} update → "
            "checkpoint"
        )
    lines.append(
        "  success        of each iteration's robot episodes, the share its policy (the "
        "previous iteration's) finished with no takeover: no simulator evaluates it"
    )
    return lines


def _robot_next(cfg: Any, k: int) -> list[str]:
    """What a robot run's next iteration takes, if it has one."""
    if k > (cfg.iterations if ALGORITHMS[cfg.algo].iterates else 0):
        return []
    out = cfg.out
    return [
        f"  next         iteration {k}: `aloe robot` collects it through `aloe serve --run "
        f"{out}`, then `aloe train --resume {out}`"
    ]


def _demos(cfg: Any) -> str:
    """Where the warm start's demonstrations come from."""
    if getattr(cfg, "demos", None) is not None:
        return f"demonstrations from {cfg.demos}"
    return plural(cfg.num_demos, "operator demonstration")


def time_left(history: list[dict[str, Any]], final_iteration: int) -> float | None:
    """Seconds the run's remaining iterations should take at the pace of those done after
    the warm start (iteration 0's BC pace says little about them); None before that."""
    walls = [r["wall_s"] for r in history if r["iteration"] > 0 and _finite(r.get("wall_s"))]
    left = final_iteration - history[-1]["iteration"] if history else final_iteration
    if left <= 0 or not walls:
        return None
    return left * sum(walls) / len(walls)


def iteration_line(
    metrics: dict[str, Any], final_iteration: int, left_s: float | None = None
) -> str:
    """`iteration 1/5: success 0.20 on 20 episodes, 3 takeovers, 120 operator steps, 45.2 s`,
    then `; about 3 min 10 s left` where `left_s` is given."""
    k = metrics["iteration"]
    what = "BC warm start" if k == 0 else plural(metrics["takeovers"], "takeover")
    left = "" if left_s is None else f"; about {duration(left_s)} left"
    seen = f"on {plural(metrics['eval_episodes'], 'episode')}"
    if metrics.get("success_source") == "robot":  # the robot's episodes: none at the warm start
        seen = f"on {plural(metrics['episodes'], 'robot episode')}" if k else "(no robot episode)"
    return (
        f"iteration {k}/{final_iteration}: success {_rate(metrics['success_rate'])} "
        f"{seen}, {what}, "
        f"{plural(metrics['human_steps'], 'operator step')}, {duration(metrics['wall_s'])}"
        f"{left}"
    )


def _success_lines(history: list[dict[str, Any]]) -> list[str]:
    rates = [r["success_rate"] for r in history]
    listed = [_rate(r) for r in rates]
    if len(listed) > MAX_LISTED:
        listed = [*listed[:3], "…", *listed[-3:]]
    first = history[0]["eval_episodes"]
    last = history[-1]["eval_episodes"]
    episodes = f"{plural(first, 'episode')} each" + (
        f", {last} at the last" if last != first else ""
    )
    if history[-1].get("success_source") == "robot":
        episodes = "of each iteration's robot episodes, with no takeover"
    final = f"{_rate(rates[0])} → {_rate(rates[-1])}" if len(rates) > 1 else f"{_rate(rates[0])}"
    return [
        f"  success      {sparkline(rates)}  {' '.join(listed)}  (iterations 0–"
        f"{history[-1]['iteration']}; {episodes})",
        f"  BC → final   {final}" + ("" if len(rates) > 1 else " (BC only: one iteration)"),
    ]


def _operator_line(history: list[dict[str, Any]]) -> str:
    total = history[-1].get("total_human_steps", 0)
    demos = history[0]["human_steps"]
    takeovers = sum(r["takeovers"] for r in history[1:])
    return (
        f"  operator     {total} steps: {demos} demonstrating, {total - demos} in "
        f"{plural(takeovers, 'takeover')}"
    )


def summary(
    cfg: Any, history: list[dict[str, Any]], session_s: float, resumed: bool, report: Path | None
) -> str:
    """The closing lines of `aloe train` on the run `cfg.out` (its config), whose metrics
    are `history`; `session_s` is this command's wall time."""
    out = Path(cfg.out)
    iterations = plural(history[-1]["iteration"], "iteration") if history else "no iterations"
    head = (
        f"aloe train: {'resumed and ' if resumed else ''}finished {out}: {cfg.algo} on "
        f"{cfg.task}, preset {cfg.preset}, {iterations} after the BC warm start"
    )
    lines = [head]
    if history:
        lines += [*_success_lines(history), _operator_line(history)]
        trained = sum(r.get("wall_s", 0.0) for r in history)
        lines.append(
            f"  wall time    {duration(session_s)}"
            + (f" this session; {duration(trained)} over all iterations" if resumed else "")
        )
    if history and not simulated(cfg.task):
        lines += _robot_next(cfg, history[-1]["iteration"] + 1)
    last = checkpoint.latest(out / "checkpoints")
    written = str(report) if report else f"not written: `aloe report {out}` retries"
    lines += [
        f"  report       {written}",
        f"  checkpoint   {last[1] if last else 'none'}",
        f"  TensorBoard  tensorboard --logdir {out / 'tb'}",
        f"  metrics      {out / 'metrics.jsonl'}",
    ]
    return "\n".join(lines)

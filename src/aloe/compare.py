"""`aloe compare`: every algorithm on the same task, seeds and budgets, then one report.

    DIR/compare.json          task, preset and extra train options (a re-run must match)
    DIR/runs/<algo>-s<seed>/  one `aloe train` run each (config.json, metrics.jsonl, ...)
    DIR/logs/<algo>-s<seed>.log
    DIR/summary.json          per algorithm, aggregated over seeds (`summarize`)
    DIR/report.html           self-contained: plots embedded as PNG (`write_report`)

Runs are separate processes (`--jobs` at a time, OMP_NUM_THREADS=1 each), so a comparison
is only as parallel as the machine. PPO+SBC learns without the operator, so its budget is
matched in environment steps: a PPO run waits for its seed's operator-loop runs (ALOE, AWR,
HG-DAgger) and gets their mean environment steps per iteration as `--ppo.rollout-steps`
(`matched_rollout_steps`); with none of them in the comparison it keeps its own cap. Re-running the same command resumes it: finished runs
are skipped, started ones continue with `aloe train --resume`, the rest start afresh.
`aloe report DIR` rebuilds summary.json and report.html from what is on disk.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from aloe.config import ALGOS, PRESETS
from aloe.envs.tasks import DEFAULT_TASK

SUMMARY, REPORT, SETTINGS = "summary.json", "report.html", "compare.json"
OPERATOR_LOOP = ("aloe", "awr", "dagger")  # collect with the operator; PPO+SBC matches them


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


@dataclass
class CompareArgs:
    """Run several algorithms × seeds with `aloe train` and compare them in one report."""

    task: str = DEFAULT_TASK
    """MetaWorld v3 task (`aloe tasks`)."""
    algos: str = "aloe,awr,dagger,bc,ppo-sbc"
    """Comma-separated algorithms, in the order the report lists them."""
    seeds: int = 3
    """Seeds 0..N−1, the same for every algorithm."""
    preset: str = "default"
    """Preset of every run (smoke | default | paper)."""
    out: Path = Path("runs/compare")
    """Comparison directory (created, or resumed when it holds the same comparison)."""
    jobs: int = field(default_factory=_cores)
    """Runs at a time (default: the cores this process may use); each uses one thread."""
    train_args: str = ""
    """Extra `aloe train` options for every run, e.g. "--iterations 3 --eval-episodes 10"."""
    progress: bool = True
    """Print which runs are going and how far along they are."""


@dataclass
class RunSpec:
    algo: str
    seed: int
    root: Path  # the comparison directory

    @property
    def name(self) -> str:
        return f"{self.algo}-s{self.seed}"

    @property
    def dir(self) -> Path:
        return self.root / "runs" / self.name

    @property
    def log(self) -> Path:
        return self.root / "logs" / f"{self.name}.log"


@dataclass
class RunState:
    """What a run directory says about its progress."""

    done: int  # completed iterations (metrics.jsonl rows)
    total: int  # iterations a finished run has (BC: 1, the warm start)
    started: bool  # config.json exists: resume rather than start

    @property
    def finished(self) -> bool:
        return self.started and self.done >= self.total


def parse_algos(text: str) -> list[str]:
    algos = [a.strip() for a in text.split(",") if a.strip()]
    bad = [a for a in algos if a not in ALGOS]
    if not algos or bad:
        raise ValueError(f"--algos {text!r}: each must be one of {', '.join(ALGOS)}")
    if len(set(algos)) != len(algos):
        raise ValueError(f"--algos {text!r}: an algorithm is listed twice")
    return algos


def validate(args: CompareArgs) -> list[str]:
    """Check the arguments before any work; returns the algorithms."""
    from aloe.envs.tasks import check_task

    check_task(args.task)
    algos = parse_algos(args.algos)
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    if args.preset not in PRESETS:
        raise ValueError(f"--preset {args.preset!r}: must be one of {', '.join(PRESETS)}")
    if args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    shlex.split(args.train_args)  # raises ValueError on unbalanced quotes
    return algos


def run_state(run: Path) -> RunState:
    started = (run / "config.json").is_file()
    total = 1
    if started:
        cfg = json.loads((run / "config.json").read_text())
        total = 1 if cfg["algo"] == "bc" else int(cfg["iterations"]) + 1
    return RunState(done=len(read_metrics(run)), total=total, started=started)


def read_metrics(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def train_command(args: CompareArgs, spec: RunSpec, state: RunState) -> list[str]:
    base = [sys.executable, "-m", "aloe.cli", "train"]
    if state.started:
        return [*base, "--resume", str(spec.dir)]
    budget = matched_rollout_steps(spec.root, spec.seed) if spec.algo == "ppo-sbc" else None
    return [*base, "--preset", args.preset, "--task", args.task, "--algo", spec.algo,
            "--seed", str(spec.seed), "--out", str(spec.dir), "--no-progress",
            *shlex.split(args.train_args),
            *(["--ppo.rollout-steps", str(budget)] if budget else [])]  # fmt: skip


def matched_rollout_steps(root: Path, seed: int) -> int | None:
    """Mean environment steps per iteration (warm start excluded) that the seed's finished
    operator-loop runs used; None when there are none."""
    steps = [row["env_steps"] for algo in OPERATOR_LOOP
             for row in read_metrics(RunSpec(algo, seed, root).dir)[1:]]  # fmt: skip
    return round(float(np.mean(steps))) if steps else None


def _ready(spec: RunSpec, pending: list[RunSpec], running: list[_Running]) -> bool:
    """A PPO+SBC run starts once its seed's operator-loop runs are done (or failed)."""
    if spec.algo != "ppo-sbc" or run_state(spec.dir).started:
        return True
    waiting = [*pending, *(r.spec for r in running)]
    return not any(s.seed == spec.seed and s.algo in OPERATOR_LOOP for s in waiting)


def _check_settings(args: CompareArgs) -> None:
    """A comparison directory holds one comparison: refuse to mix settings."""
    settings = {"task": args.task, "preset": args.preset, "train_args": args.train_args}
    path = args.out / SETTINGS
    if path.is_file():
        old = json.loads(path.read_text())
        diff = {k: old.get(k) for k, v in settings.items() if old.get(k) != v}
        if diff:
            raise ValueError(f"--out {args.out} holds a comparison with other settings "
                             f"{diff}; choose another --out")  # fmt: skip
        algos = list(dict.fromkeys([*old.get("algos", []), *parse_algos(args.algos)]))
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        algos = parse_algos(args.algos)
    path.write_text(json.dumps({**settings, "algos": algos}, indent=1))


@dataclass
class _Running:
    spec: RunSpec
    proc: subprocess.Popen[bytes]
    log: IO[bytes]
    start: float = field(default_factory=time.time)


def run_comparison(args: CompareArgs) -> dict[str, Any]:
    """Run (or resume) every (algo, seed), then write summary.json and report.html."""
    algos = validate(args)
    _check_settings(args)
    specs = [RunSpec(a, s, args.out) for a in algos for s in range(args.seeds)]
    pending = [s for s in specs if not run_state(s.dir).finished]
    failed: dict[str, int] = {}
    running: list[_Running] = []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    shown = ""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        while pending or running:
            ready = [s for s in pending if _ready(s, pending, running)]
            for spec in ready[: max(0, args.jobs - len(running))]:
                pending.remove(spec)
                running.append(_start(args, spec, env))
            time.sleep(0.5)
            for r in [r for r in running if r.proc.poll() is not None]:
                running.remove(r)
                r.log.close()
                if r.proc.returncode != 0:
                    failed[r.spec.name] = r.proc.returncode
            line = _progress_line(specs, running, failed)
            if args.progress and line != shown:
                print(line, file=sys.stderr, flush=True)
                shown = line
    except KeyboardInterrupt:
        for r in running:  # our own children; they resume from their last checkpoint
            r.proc.terminate()
            r.proc.wait()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    summary = write_report(args.out)
    if failed:
        names = ", ".join(f"{n} (exit {c}, see logs/{n}.log)" for n, c in failed.items())
        raise RuntimeError(f"runs failed: {names}; re-run the same command to retry them")
    return summary


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _start(args: CompareArgs, spec: RunSpec, env: dict[str, str]) -> _Running:
    state = run_state(spec.dir)
    if not state.started and spec.dir.exists():
        shutil.rmtree(spec.dir)  # killed before its config was written: nothing to keep
    log = open(spec.log, "ab")  # noqa: SIM115 (closed when the run ends)
    cmd = train_command(args, spec, state)
    log.write(f"\n$ {shlex.join(cmd)}\n".encode())
    log.flush()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    return _Running(spec, proc, log)


def _progress_line(specs: list[RunSpec], running: list[_Running], failed: dict[str, int]) -> str:
    states = {s.name: run_state(s.dir) for s in specs}
    done = sum(st.finished for st in states.values())
    going = ", ".join(_run_progress(r.spec.name, states[r.spec.name]) for r in running)
    line = f"[compare] {done}/{len(specs)} runs done; running: {going or '-'}"
    return line + (f"; failed: {', '.join(failed)}" if failed else "")


def _run_progress(name: str, st: RunState) -> str:
    if not st.started:
        return f"{name} starting"
    return f"{name} iteration {st.done}/{st.total}"


# Summary.


def _discover(root: Path) -> dict[str, list[Path]]:
    """Run directories under root/runs by algorithm, in compare.json's (or ALGOS') order."""
    found: dict[str, list[Path]] = {}
    for run in sorted((root / "runs").glob("*-s*")):
        algo, _, seed = run.name.rpartition("-s")
        if algo in ALGOS and seed.isdigit():
            found.setdefault(algo, []).append(run)
    settings = root / SETTINGS
    order = json.loads(settings.read_text())["algos"] if settings.is_file() else list(ALGOS)
    order += [a for a in found if a not in order]
    return {a: sorted(found[a], key=_seed_of) for a in order if a in found}


def _seed_of(run: Path) -> int:
    return int(run.name.rpartition("-s")[2])


def _stats(values: list[float]) -> tuple[float | None, float | None]:
    ok = [v for v in values if v is not None and math.isfinite(v)]
    return (float(np.mean(ok)), float(np.std(ok))) if ok else (None, None)


def summarize_algo(runs: list[Path]) -> dict[str, Any]:
    """One algorithm's runs aggregated over seeds (iteration k over the runs that have it)."""
    metrics = {_seed_of(r): read_metrics(r) for r in runs}
    finished = [_seed_of(r) for r in runs if run_state(r).finished]
    longest = max((len(m) for m in metrics.values()), default=0)
    per_iter: dict[str, list[Any]] = {k: [] for k in (
        "success_mean", "success_std", "seeds", "operator_steps", "env_steps")}  # fmt: skip
    for k in range(longest):
        rows = [m[k] for m in metrics.values() if len(m) > k]
        mean, std = _stats([r["success_rate"] for r in rows])
        per_iter["success_mean"].append(mean)
        per_iter["success_std"].append(std)
        per_iter["seeds"].append(len(rows))
        per_iter["operator_steps"].append(_stats([r["total_human_steps"] for r in rows])[0])
        per_iter["env_steps"].append(_stats([r["total_env_steps"] for r in rows])[0])
    final = [metrics[s][-1] for s in finished]
    success, success_std = _stats([r["success_rate"] for r in final])
    return {
        "seeds": sorted(metrics),
        "finished_seeds": sorted(finished),
        "iterations": list(range(longest)),
        **{
            f"{k}_per_iteration" if k != "seeds" else "seeds_per_iteration": v
            for k, v in per_iter.items()
        },  # fmt: skip
        "final_success": success,
        "final_success_std": success_std,
        "operator_steps": _stats([r["total_human_steps"] for r in final])[0],
        "env_steps": _stats([r["total_env_steps"] for r in final])[0],
        "mean_steps_to_success": _stats([r["mean_steps_to_success"] for r in final])[0],
        "wall_s": _stats([sum(x["wall_s"] for x in metrics[s]) for s in finished])[0],
    }


def summarize(root: Path) -> dict[str, Any]:
    """summary.json's content, from the run directories under root/runs."""
    settings = root / SETTINGS
    head = json.loads(settings.read_text()) if settings.is_file() else {}
    algos = {a: summarize_algo(runs) for a, runs in _discover(root).items()}
    return {"task": head.get("task"), "preset": head.get("preset"),
            "train_args": head.get("train_args", ""), "algos": algos}  # fmt: skip


def write_report(root: Path) -> dict[str, Any]:
    """(Re)build summary.json (from runs/ when present) and report.html; returns the summary."""
    root = Path(root)
    if (root / "runs").is_dir():
        summary = summarize(root)
        tmp = root / (SUMMARY + ".tmp")
        tmp.write_text(json.dumps(summary, indent=1))
        os.replace(tmp, root / SUMMARY)
    else:
        summary = json.loads((root / SUMMARY).read_text())
    build_page(summary, root / REPORT)
    return summary


def is_comparison(root: Path) -> bool:
    return (root / SUMMARY).is_file() or (root / "runs").is_dir()


# Report.

_LABELS = {"aloe": "ALOE", "awr": "AWR", "dagger": "HG-DAgger", "bc": "BC", "ppo-sbc": "PPO+SBC"}


def _label(algo: str) -> str:
    return _LABELS.get(algo, algo)


def _color(algo: str) -> Any:
    import matplotlib.pyplot as plt

    return plt.get_cmap("tab10")(ALGOS.index(algo) if algo in ALGOS else 9)


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
            ax.hlines(y, 0, max(last, 1), colors=[_color(algo)], linestyles="--",
                      label=_label(algo))  # fmt: skip
        else:
            _band(ax, algo, a["iterations"], a["success_mean_per_iteration"],
                  a["success_std_per_iteration"])  # fmt: skip
    ax.set(xlabel="iteration (0 = BC warm start)", ylabel="success rate", ylim=(-0.02, 1.02))
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
    ax.bar([_label(a) for a in names], means, yerr=stds, capsize=4,
           color=[_color(a) for a in names])  # fmt: skip
    ax.set(ylabel="final success rate", ylim=(0, 1.05))
    ax.grid(axis="y", alpha=0.3)
    return fig


def _success_versus(algos: dict[str, Any], key: str, xlabel: str) -> Any:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for algo, a in algos.items():
        _band(ax, algo, a[key], a["success_mean_per_iteration"], a["success_std_per_iteration"])
    ax.set(xlabel=xlabel, ylabel="success rate", ylim=(-0.02, 1.02))
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def _pm(mean: float | None, std: float | None) -> str:
    return "–" if mean is None else f"{mean:.2f} ± {std or 0.0:.2f}"


def _int(x: float | None) -> int | None:
    return None if x is None else round(x)


def _table_rows(algos: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "algorithm": _label(algo),
            "seeds (finished)": f"{len(a['finished_seeds'])}/{len(a['seeds'])}",
            "final success": _pm(a["final_success"], a["final_success_std"]),
            "operator steps": _int(a["operator_steps"]),
            "env steps": _int(a["env_steps"]),
            "steps to success": a["mean_steps_to_success"],
            "wall time (min)": None if a["wall_s"] is None else a["wall_s"] / 60,
        }
        for algo, a in algos.items()
    ]


def build_page(summary: dict[str, Any], path: Path) -> Path:
    """report.html from a summary: the four figures and the table, nothing external."""
    import matplotlib

    matplotlib.use("Agg")
    from aloe.report import figure_html, table_html, write_page

    algos = summary["algos"]
    note = (
        '<p class="note">Mean ± std over seeds. Operator steps: demonstration and correction '
        "steps; env steps: all collection steps (evaluation excluded). PPO+SBC runs without "
        "the operator after the warm start. Wall time counts training and evaluation of a run "
        "while other runs shared the machine.</p>"
    )
    sections = [
        ("Success per iteration (Fig. 6)",
         figure_html(_success_per_iteration(algos), "success per iteration")),
        ("Final success (Fig. 4)", figure_html(_final_bars(algos), "final success")),
        ("Success per operator step",
         figure_html(_success_versus(algos, "operator_steps_per_iteration",
                                     "operator steps (cumulative)"), "success per operator step")),
        ("Success per environment step",
         figure_html(_success_versus(algos, "env_steps_per_iteration",
                                     "environment steps (cumulative)"), "success per env step")),
        ("Summary", table_html(_table_rows(algos)) + note),
    ]  # fmt: skip
    title = f"aloe compare: {summary.get('task')} ({summary.get('preset')} preset)"
    return write_page(path, title, sections)

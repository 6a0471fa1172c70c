"""`aloe compare`: every algorithm on the same task, seeds and budgets, then one report.

    DIR/compare.json          task, preset and extra train options (a re-run must match)
    DIR/runs/<algo>-s<seed>/  one `aloe train` run each (config.json, metrics.jsonl, ...)
    DIR/logs/<algo>-s<seed>.log
    DIR/runs/<algo>-s<seed>/action_ope.json   its action-level OPE (runs with a Q critic or labels)
    DIR/summary.json          per algorithm, aggregated over seeds (aloe.compare_summary)
    DIR/report.html           self-contained: plots embedded as PNG (aloe.compare_page)

Runs are separate processes (`--jobs` at a time, OMP_NUM_THREADS=1 each), so a comparison
is only as parallel as the machine. PPO+SBC learns without the operator, so its budget is
matched in environment steps: a PPO run waits for its seed's operator-loop runs (ALOE, AWR,
HG-DAgger) and gets their mean environment steps per iteration as `--ppo.rollout-steps`
(`matched_rollout_steps`); with none of them in the comparison it keeps its own cap. Re-running the same command resumes it: finished runs
are skipped, started ones continue with `aloe train --resume`, the rest start afresh.
`aloe report DIR` rebuilds summary.json and report.html from what is on disk.
"""

from __future__ import annotations

import importlib.util
import json
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

from aloe.algos.table import ALGORITHMS, unread_option
from aloe.cli_args import parse
from aloe.compare_dir import (
    SETTINGS,
    RunSpec,
    RunState,
    discover,
    read_json,
    read_metrics,
    read_optional,
    run_state,
    settings_changed,
)
from aloe.compare_summary import write_report
from aloe.config import ALGOS, PRESETS, TrainConfig, preset
from aloe.distributed.ray_runs import RayRun
from aloe.distributed.workers import connect
from aloe.envs.tasks import DEFAULT_TASK, check_task, task_list
from aloe.errors import bad, require
from aloe.evaluation.action_ope import ACTION_OPE_FILE, ActionOpeConfig, applies
from aloe.progress import Progress, lines

# `aloe train` options that compare sets itself for each run: refused in --train-args
OWN_OPTIONS = ("--algo", "--seed", "--out", "--preset", "--task", "--resume", "--help", "-h")
# algorithms that collect with the operator (aloe, awr, dagger); one with a `matched_budget`
# (PPO+SBC) gets their mean environment steps per iteration
OPERATOR_LOOP = tuple(a for a, row in ALGORITHMS.items() if row.with_operator)


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


@dataclass
class CompareArgs:
    """Run several algorithms × seeds with `aloe train` and compare them in one report."""

    task: str = DEFAULT_TASK
    """Task (`aloe tasks`): a MetaWorld v3 task, or OGBench's cube-double, scene or
    puzzle-3x3."""
    algos: str = "aloe,awr,dagger,bc,ppo-sbc"
    """Comma-separated algorithms, in the order the report lists them."""
    seeds: int = 3
    """Seeds 0..N−1, the same for every algorithm."""
    preset: str = "default"
    """Preset of every run (smoke | default | paper | mt10)."""
    out: Path = Path("runs/compare")
    """Comparison directory (created, or resumed when it holds the same comparison: the same
    task, preset and train-args, and for new seeds the config its runs ran with, which a
    change of aloe's defaults since would break: refused, naming the fields)."""
    jobs: int = field(default_factory=_cores)
    """Runs at a time (default: the cores this process may use); each uses one thread."""
    train_args: str = ""
    """Extra `aloe train` options for every run, checked as `aloe train` checks them before
    any run starts; each run gets the ones it reads (`--aloe.*` goes to ALOE's runs alone).
    Attach the value with `=`, since it starts with `-`:
    --train-args='--iterations 3 --aloe.beta 10'."""
    backend: str = "local"
    """local: runs are subprocesses of this machine (--jobs at a time); ray: Ray tasks on
    the cluster at --ray-address (or a local Ray), as many at a time as its resources allow
    (aloe.distributed.ray_runs)."""
    ray_address: str | None = None
    """Ray backend: a running cluster (`ray start --head` prints it); implies --backend ray."""
    cpus_per_run: float = 1.0
    """Ray backend: CPUs each run reserves (and its torch threads)."""
    gpus_per_run: float = 0.0
    """Ray backend: GPUs each run reserves (give the runs --train-args=--device=cuda)."""
    action_ope_states: int = 24
    """Action-level OPE of each finished run with a chunked Q critic or labels (ALOE,
    RECAP; single-task state runs, MetaWorld or OGBench), `aloe eval --suite action-ope` as
    a job of its own: buffer states (0: none). Its scores join the summary and the report."""
    action_ope_chunks: int = 7
    """Action-level OPE: chunks sampled from π per state, ranked with the data chunk."""
    action_ope_rollouts: int = 2
    """Action-level OPE: Monte-Carlo rollouts per chunk."""
    progress: Progress = None
    """A line on stderr whenever the runs' state changes (which are going, how far along);
    --no-progress: none. Each run's own output goes to DIR/logs/."""


def parse_algos(text: str) -> list[str]:
    algos = [a.strip() for a in text.split(",") if a.strip()]
    unknown = [a for a in algos if a not in ALGOS]
    require(bool(algos) and not unknown, "--algos", text, f"each must be one of {', '.join(ALGOS)}")
    require(len(set(algos)) == len(algos), "--algos", text, "an algorithm is listed twice")
    return algos


def validate(args: CompareArgs) -> list[str]:
    """Check the arguments before any work, every run's config included; returns the
    algorithms. Nothing is written before this has passed."""
    try:
        check_task(args.task)
    except ValueError as e:
        raise bad("--task", args.task, str(e)) from None
    algos = parse_algos(args.algos)
    require(args.seeds >= 1, "--seeds", args.seeds, "must be >= 1")
    require(args.preset in PRESETS, "--preset", args.preset, f"one of {', '.join(PRESETS)}")
    require(args.jobs >= 1, "--jobs", args.jobs, "must be >= 1")

    ActionOpeConfig.from_args(args).check(flags=True)
    _check_backend(args)
    _check_out(args.out)
    for algo in algos:  # the seed is the only other per-run option, and any seed >= 0 is valid
        _check_same_runs(args, algo, train_config(args, RunSpec(algo, 0, args.out)))
    return algos


def _check_same_runs(args: CompareArgs, algo: str, fresh: TrainConfig) -> None:
    """New runs of `algo` in an existing comparison must get the config its runs there ran
    with: the same options with other defaults (a newer aloe) would mix two settings in one
    row of the report."""
    runs = [RunSpec(algo, s, args.out).dir for s in range(args.seeds)]
    started = [r for r in runs if (r / "config.json").is_file()]
    if not started or len(started) == len(runs):
        return
    changed = settings_changed(started[0], fresh)
    shown = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in list(changed.items())[:4])
    require(
        not changed,
        "--out",
        args.out,
        f"its {algo} runs ran with settings that a new run would not get ({shown}: aloe's "
        "defaults changed since); more seeds there would mix the two. Choose another --out",
    )


def _check_backend(args: CompareArgs) -> None:
    """--backend and its options; with Ray, that it is installed (it is connected to in
    `run_comparison`, before anything is written)."""
    if args.ray_address is not None:
        args.backend = "ray"
    require(args.backend in ("local", "ray"), "--backend", args.backend, "must be local or ray")
    require(args.cpus_per_run > 0, "--cpus-per-run", args.cpus_per_run, "must be > 0")
    require(args.gpus_per_run >= 0, "--gpus-per-run", args.gpus_per_run, "must be >= 0")
    if args.backend == "ray":
        require(
            importlib.util.find_spec("ray") is not None,
            "--backend",
            args.backend,
            "needs Ray, which is not installed: pip install 'aloe[ray]'",
        )
        args.out = args.out.absolute()  # a Ray worker's directory is not this one


def _check_out(out: Path) -> None:
    """--out is new, empty, or a comparison (compare.json): never a foreign directory."""
    require(not out.exists() or out.is_dir(), "--out", out, "is a file; give a directory")
    if out.is_dir() and not (out / SETTINGS).is_file() and any(out.iterdir()):
        raise bad(
            "--out",
            out,
            f"is not empty and holds no comparison (no {SETTINGS}); "
            "choose a new or empty directory",
        )


def train_config(args: CompareArgs, spec: RunSpec) -> Any:
    """The TrainConfig `aloe train` would build for a fresh run of `spec`, validated as
    `aloe train` validates it (a UsageError naming --train-args otherwise)."""
    try:
        extra = shlex.split(args.train_args)
    except ValueError as e:  # unbalanced quotes
        raise bad("--train-args", args.train_args, str(e)) from None
    own = [t for t in extra if t.split("=")[0].replace("_", "-") in OWN_OPTIONS]
    require(
        not own,
        "--train-args",
        args.train_args,
        f"{own[0] if own else ''} is set by compare for each run; use compare's own option",
    )
    argv = [*_fresh_options(args, spec), *extra, "--preset", args.preset]
    try:
        cfg = parse(TrainConfig, argv, "aloe train", default=preset(args.preset, args.task))
        cfg.validate()
    except ValueError as e:  # UsageError included: say which option it came from
        raise bad("--train-args", args.train_args, str(e)) from None
    return cfg


def _fresh_options(args: CompareArgs, spec: RunSpec) -> list[str]:
    return ["--algo", spec.algo, "--seed", str(spec.seed), "--out", str(spec.dir), "--no-progress"]


def train_command(args: CompareArgs, spec: RunSpec, state: RunState) -> list[str]:
    base = [sys.executable, "-m", "aloe.cli", "train"]
    if state.started:
        return [*base, "--resume", str(spec.dir)]
    flag = ALGORITHMS[spec.algo].matched_budget
    budget = matched_rollout_steps(spec.root, spec.seed) if flag else None
    return [
        *base,
        "--preset",
        args.preset,
        "--task",
        args.task,
        *_fresh_options(args, spec),
        *own_options(shlex.split(args.train_args), spec.algo),
        *([flag, str(budget)] if flag and budget else []),
    ]


def own_options(tokens: list[str], algo: str) -> list[str]:
    """`--train-args` as an `algo` run takes them: one string serves every algorithm of the
    comparison, so the options of fields this run never reads (another algorithm's group,
    `unread_fields`), with their values, are left out rather than refused by `aloe train`."""
    kept = []
    skip_value = False
    for token in tokens:
        if skip_value and not token.startswith("--"):
            skip_value = False
            continue
        skip_value = False
        if unread_option(token, algo) is not None:
            skip_value = "=" not in token
            continue
        kept.append(token)
    return kept


def action_ope_command(args: CompareArgs, spec: RunSpec) -> list[str]:
    return [
        sys.executable,
        "-m",
        "aloe.cli",
        "eval",
        "--run",
        str(spec.dir),
        "--suite",
        "action-ope",
        "--action-ope-states",
        str(args.action_ope_states),
        "--action-ope-chunks",
        str(args.action_ope_chunks),
        "--action-ope-rollouts",
        str(args.action_ope_rollouts),
        "--no-progress",
    ]


def action_ope_job(args: CompareArgs, spec: RunSpec) -> RunSpec | None:
    """The action-level OPE job a finished run still needs, or None: off, not applicable
    (neither a chunked Q critic nor labels, `applies`; not a single-task state run), or
    done already for its last checkpoint with these sample sizes."""
    if args.action_ope_states <= 0 or not run_state(spec.dir).finished:
        return None
    cfg = TrainConfig.load(spec.dir)
    tasks = task_list(cfg.task)
    if not applies(ALGORITHMS[cfg.algo], cfg) or cfg.obs != "state" or len(tasks) != 1:
        return None
    wanted = {
        "states": args.action_ope_states,
        "chunks": args.action_ope_chunks,
        "rollouts": args.action_ope_rollouts,
    }
    done = read_optional(spec.dir / ACTION_OPE_FILE)
    if (
        done
        and done.get("iteration") == len(read_metrics(spec.dir)) - 1
        and all((done.get("config") or {}).get(k) == v for k, v in wanted.items())
    ):
        return None
    return RunSpec(spec.algo, spec.seed, spec.root, kind="action-ope")


def matched_rollout_steps(root: Path, seed: int) -> int | None:
    """Mean environment steps per iteration (warm start excluded) that the seed's finished
    operator-loop runs used; None when there are none."""
    steps = [
        row["env_steps"]
        for algo in OPERATOR_LOOP
        for row in read_metrics(RunSpec(algo, seed, root).dir)[1:]
    ]
    return round(float(np.mean(steps))) if steps else None


def _ready(spec: RunSpec, pending: list[RunSpec], running: list[_Running]) -> bool:
    """A run with a matched budget (PPO+SBC) starts once its seed's operator-loop runs are
    done (or failed)."""
    if (
        spec.kind != "train"
        or ALGORITHMS[spec.algo].matched_budget is None
        or run_state(spec.dir).started
    ):
        return True
    waiting = [*pending, *(r.spec for r in running)]
    return not any(s.seed == spec.seed and s.algo in OPERATOR_LOOP for s in waiting)


def _check_settings(args: CompareArgs) -> None:
    """A comparison directory holds one comparison: refuse to mix settings."""
    settings = {"task": args.task, "preset": args.preset, "train_args": args.train_args}
    path = args.out / SETTINGS
    if path.is_file():
        old = read_json(path, "--out")
        diff = {k: old.get(k) for k, v in settings.items() if old.get(k) != v}
        require(
            not diff,
            "--out",
            args.out,
            f"holds a comparison with other settings {diff}; choose another --out",
        )
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
    started_ray = _connect(args)
    _check_settings(args)
    specs = [RunSpec(a, s, args.out) for a in algos for s in range(args.seeds)]
    pending = [s for s in specs if not run_state(s.dir).finished]
    pending += [job for s in specs if (job := action_ope_job(args, s))]
    failed: dict[str, tuple[int, str]] = {}  # label -> (exit code, log name)
    running: list[_Running] = []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    shown = ""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        while pending or running:
            ready = [s for s in pending if _ready(s, pending, running)]
            slots = args.jobs if args.backend == "local" else len(specs)  # Ray schedules
            for spec in ready[: max(0, slots - len(running))]:
                pending.remove(spec)
                running.append(_start(args, spec, env))
            time.sleep(0.5)
            for r in [r for r in running if r.proc.poll() is not None]:
                running.remove(r)
                r.log.close()
                if r.proc.returncode != 0:
                    failed[r.spec.label] = (r.proc.returncode, r.spec.name)
                elif r.spec.kind == "train" and (job := action_ope_job(args, r.spec)):
                    pending.append(job)
            line = _progress_line(specs, running, failed)
            if lines(args.progress) and line != shown:
                print(line, file=sys.stderr, flush=True)
                shown = line
    except KeyboardInterrupt:
        for r in running:  # our own children; they resume from their last checkpoint
            r.proc.terminate()
            r.proc.wait()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        if started_ray:
            import ray  # optional extra: ray

            ray.shutdown()
    if failed:
        if discover(args.out):
            write_report(args.out)
        names = ", ".join(
            f"{label} (exit {code}, see logs/{name}.log)" for label, (code, name) in failed.items()
        )
        raise RuntimeError(f"runs failed: {names}; re-run the same command to retry them")
    return write_report(args.out)


def _connect(args: CompareArgs) -> bool:
    """The Ray backend's cluster (an unreachable address is a UsageError, before any write);
    returns whether Ray was started here."""
    if args.backend != "ray":
        return False
    return connect(args.ray_address, num_cpus=None)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _start(args: CompareArgs, spec: RunSpec, env: dict[str, str]) -> _Running:
    state = run_state(spec.dir)
    if spec.kind == "train" and not state.started and spec.dir.exists():
        shutil.rmtree(spec.dir)  # killed before its config was written: nothing to keep
    log = open(spec.log, "ab")  # noqa: SIM115 (closed when the run ends)
    cmd = (
        train_command(args, spec, state) if spec.kind == "train" else action_ope_command(args, spec)
    )
    log.write(f"\n$ {shlex.join(cmd)}\n".encode())
    log.flush()
    if args.backend == "ray":
        threads = str(max(1, int(args.cpus_per_run)))
        log.close()  # the task appends to it, on whichever node runs it
        proc: Any = RayRun(
            cmd,
            spec.log,
            {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads},
            args.cpus_per_run,
            args.gpus_per_run,
        )
    else:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    return _Running(spec, proc, log)


def _progress_line(specs: list[RunSpec], running: list[_Running], failed: dict[str, Any]) -> str:
    states = {s.name: run_state(s.dir) for s in specs}
    done = sum(st.finished for st in states.values())
    going = ", ".join(
        _run_progress(r.spec.name, states[r.spec.name]) if r.spec.kind == "train" else r.spec.label
        for r in running
    )
    line = f"[compare] {done}/{len(specs)} runs done; running: {going or '-'}"
    return line + (f"; failed: {', '.join(failed)}" if failed else "")


def _run_progress(name: str, st: RunState) -> str:
    if not st.started:
        return f"{name} starting"
    return f"{name} iteration {st.done}/{st.total}"

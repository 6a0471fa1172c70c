"""The `aloe` command line: one program, one sub-command per job.

Every sub-command validates its arguments before doing any work and exits with a one-line
error naming the offending value.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import tyro

from aloe.envs.tasks import DEFAULT_TASK
from aloe.errors import UsageError

if TYPE_CHECKING:
    from aloe.compare import CompareArgs

USAGE = """usage: aloe COMMAND [ARGS]

commands:
  tasks            list the supported MetaWorld tasks and their instructions
  collect          record operator demonstrations, or run a policy with the operator in the loop
  dataset info     summarise an episode store
  dataset check    validate an episode store (non-zero exit on any problem)
  train            run Algorithm 1 (BC warm start, then collect / critic / actor / evaluate)
  eval             evaluate a trained run without the operator (--suite full: the whole suite)
  plot-q           plot Q_pess along a dataset episode or a fresh rollout of a run
  bench            measure collection and sampling speed
  compare          run several algorithms x seeds on one task and write a comparison report
  report           (re)build the HTML report of a comparison or of a run directory

`aloe COMMAND --help` describes each command's options.
"""


@dataclass
class TasksArgs:
    """List the supported tasks."""

    verify: bool = False
    """Also run each task's scripted expert on 10 seeds and report its success and length."""
    variants: bool = False
    """Also list each task's evaluation variants (unseen objects); with --verify, the
    expert's success on 5 seeds of each (is the variant solvable?)."""


def cmd_tasks(args: TasksArgs) -> int:
    from aloe.envs.tasks import INSTRUCTIONS, supported_tasks

    for name in supported_tasks():
        line = f"{name:32s} {INSTRUCTIONS[name]}"
        if args.verify:
            from aloe.envs.metaworld import expert_episode_length

            line += f"   (expert: {expert_episode_length(name):.0f} steps)"
        print(line)
        if args.variants:
            from aloe.evaluation.variants import expert_success, task_variants

            for v in task_variants(name)[1:]:
                solved = f"   (expert: {expert_success(name, v):.0%})" if args.verify else ""
                print(f"    {v.name:16s} {v.description}{solved}")
    return 0


@dataclass
class CollectArgs:
    """Record operator demonstrations, or run a policy with the operator in the loop."""

    task: str = DEFAULT_TASK
    """MetaWorld v3 task (`aloe tasks`)."""
    episodes: int = 20
    """Number of episodes to record."""
    out: Annotated[Path, tyro.conf.arg(aliases=["-o"])] = Path("data/demos")
    """Episode store to create, or to grow if it is already an aloe store."""
    policy: str | None = None
    """None: operator demonstrations; `random`: a random policy; or a run directory."""
    seed: int = 0
    """Seed of the first episode; episode i uses seed + i."""
    max_steps: int = 300
    """Time limit of the policy's attempt (or of a demonstration)."""
    noise: float = 0.1
    """Operator action noise (std)."""
    delay: int = 0
    """Operator reaction delay in steps."""
    patience: int = 60
    """Operator takes over after this many steps without progress (0 = only on failure)."""
    handback_steps: int = 0
    """0: the operator completes the task; > 0: hands control back after this many steps."""
    progress: bool = True
    """Show a progress bar."""


def cmd_collect(args: CollectArgs) -> int:
    import itertools

    from aloe.collect import CollectConfig, collect
    from aloe.datasets.store import EpisodeStore, StoreError
    from aloe.envs.metaworld import CONTROL_HZ, EnvConfig, TaskEnv
    from aloe.envs.tasks import task_list
    from aloe.operators.scripted import OperatorConfig, ScriptedOperator

    try:
        one_task = len(task_list(args.task)) == 1  # sim.state's size differs between tasks
    except ValueError as e:
        raise UsageError(str(e)) from None
    _require(args.episodes >= 1, f"--episodes must be >= 1, got {args.episodes}")
    _require(args.max_steps >= 1, f"--max-steps must be >= 1, got {args.max_steps}")
    _require(args.noise >= 0, f"--noise must be >= 0, got {args.noise}")
    _require(args.delay >= 0, f"--delay must be >= 0, got {args.delay}")
    _require(args.patience >= 0, f"--patience must be >= 0, got {args.patience}")
    policy = _load_collect_policy(args.policy, args.seed)
    env = TaskEnv(EnvConfig(task=args.task, max_steps=args.max_steps))
    try:
        store = EpisodeStore.open_or_create(
            args.out, fps=CONTROL_HZ, state_dim=env.state_dim, action_dim=env.action_dim,
            sim_state_dim=env.sim_state_dim if one_task else None,
        )  # fmt: skip
    except StoreError as e:
        raise UsageError(str(e)) from None
    op_cfg = OperatorConfig(noise_std=args.noise, delay_steps=args.delay, patience=args.patience)
    operator = ScriptedOperator(args.task, op_cfg, seed=args.seed)
    cfg = CollectConfig(success_quota=args.episodes, max_episodes=args.episodes,
                        handback_steps=args.handback_steps, record_sim_state=one_task)  # fmt: skip
    _, stats = collect(
        env, operator, cfg, policy=policy, seeds=itertools.count(args.seed), store=store,
        progress=args.progress,
    )  # fmt: skip
    print(json.dumps({"out": str(args.out), **vars(stats)}, indent=1))
    return 0


def _load_collect_policy(spec: str | None, seed: int) -> Any:
    from aloe.collect import RandomPolicy

    if spec is None:
        return None
    if spec == "random":
        return RandomPolicy(seed=seed)
    run = Path(spec)
    _require(run.is_dir(), f"--policy must be 'random' or a run directory; {spec!r} is neither")
    from aloe.run import load_run

    return load_run(run).chunk_policy(seed=seed)


@dataclass
class DatasetArgs:
    """Summarise or validate an episode store."""

    action: tyro.conf.Positional[Literal["info", "check"]]
    """`info` prints a summary; `check` validates every file (exit 1 on any problem)."""
    root: tyro.conf.Positional[Path]
    """The store's directory."""


def cmd_dataset(args: DatasetArgs) -> int:
    from aloe.datasets import cli as dataset_cli

    return dataset_cli.info(args.root) if args.action == "info" else dataset_cli.check(args.root)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise UsageError(message)


def _usage_errors(run: Callable[[Any], int]) -> Callable[[Any], int]:
    """A command whose validation raises ValueError, with it shown as a one-line error."""

    def checked(args: Any) -> int:
        try:
            return run(args)
        except ValueError as e:
            raise UsageError(str(e)) from None

    return checked


def _simple(arg_type: type, run: Callable[[Any], int]) -> Callable[[list[str], str], int]:
    return lambda argv, prog: run(tyro.cli(arg_type, args=argv, prog=prog))


def cmd_train(argv: list[str], prog: str) -> int:
    """`aloe train [--preset P] [--task T] [--resume DIR] [--<any config field> V]`."""
    from aloe import train
    from aloe.config import TrainConfig, preset

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default="default")
    pre.add_argument("--task", default=None)
    pre.add_argument("--resume", type=Path, default=None)
    known, rest = pre.parse_known_args(argv)
    if known.resume is not None:
        _require(not rest, f"--resume takes no other options, got {' '.join(rest)}")
        cfg = TrainConfig(out=known.resume)
    else:
        try:
            base = preset(known.preset, known.task)
        except ValueError as e:
            raise UsageError(str(e)) from None
        description = f"Run Algorithm 1. Defaults below are the {known.preset!r} preset."
        cfg = tyro.cli(TrainConfig, default=base, args=rest + ["--preset", known.preset],
                       prog=prog, description=description)  # fmt: skip
    try:
        history = train.train(cfg, resume=known.resume is not None)
    except ValueError as e:
        raise UsageError(str(e)) from None
    except FloatingPointError as e:  # the guard fired before the bad update was applied
        from aloe import checkpoint

        last = checkpoint.latest(cfg.out / "checkpoints")
        kept = f"the last good checkpoint is {last[1]}" if last else "no checkpoint was written"
        print(f"aloe train: stopped: {e}; {kept}", file=sys.stderr)
        return 3
    print(json.dumps(train.json_safe(history[-1]), indent=1))
    return 0


def cmd_compare(args: CompareArgs) -> int:
    from aloe import compare

    try:
        summary = compare.run_comparison(args)
    except ValueError as e:
        raise UsageError(str(e)) from None
    except RuntimeError as e:
        print(f"aloe compare: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("aloe compare: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    finals = {a: s["final_success"] for a, s in summary["algos"].items()}
    print(json.dumps({"report": str(args.out / compare.REPORT), "final_success": finals}))
    return 0


@dataclass
class ReportArgs:
    """Rebuild a report from disk: a comparison's (summary.json or runs/) or a single run's."""

    dir: tyro.conf.Positional[Path]
    """A directory written by `aloe compare` or by `aloe train`."""


def cmd_report(args: ReportArgs) -> int:
    import importlib
    import importlib.util

    from aloe import compare

    _require(args.dir.is_dir(), f"{args.dir} is not a directory")
    if compare.is_comparison(args.dir):
        compare.write_report(args.dir)
        print(args.dir / compare.REPORT)
        return 0
    if importlib.util.find_spec("aloe.evaluation.report") is None:
        raise UsageError(f"{args.dir} is not a comparison (no summary.json or runs/), and "
                         "run reports need aloe.evaluation.report, which this install lacks")  # fmt: skip
    report = importlib.import_module("aloe.evaluation.report")
    print(report.build_run_report(args.dir))
    return 0


def _commands() -> dict[str, Callable[[list[str], str], int]]:
    from aloe import bench, compare, train
    from aloe.evaluation import qtrace

    return {
        "tasks": _simple(TasksArgs, cmd_tasks),
        "collect": _simple(CollectArgs, cmd_collect),
        "dataset": _simple(DatasetArgs, cmd_dataset),
        "train": cmd_train,
        "eval": _simple(train.EvalArgs, _usage_errors(train.cmd_eval)),
        "plot-q": _simple(qtrace.PlotQArgs, _usage_errors(qtrace.cmd_plot_q)),
        "bench": _simple(bench.BenchArgs, bench.cmd_bench),
        "compare": _simple(compare.CompareArgs, cmd_compare),
        "report": _simple(ReportArgs, cmd_report),
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    warnings.filterwarnings("ignore", message=".*Constant\\(s\\) may be too high.*")
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    commands = _commands()
    name = argv[0]
    if name not in commands:
        print(f"aloe: unknown command {name!r}; commands: {', '.join(commands)}", file=sys.stderr)
        return 2
    try:
        return commands[name](argv[1:], f"aloe {name}")
    except UsageError as e:
        print(f"aloe {name}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `aloe tasks | head`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())

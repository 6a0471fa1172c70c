"""The `aloe` command line: one program, one sub-command per job, all in one table.

`COMMANDS` maps each sub-command's name to its line in `aloe --help`, how its arguments are
read (a dataclass tyro parses, or a function of argv) and the function that runs it; the
top-level usage, the "unknown command" message and the dispatch are all read from it. The
commands themselves live with what they do: cli_data (tasks, collect, dataset), cli_runs
(train, compare, report), run_eval, evaluation.qtrace, bench, serve.cli and robot.sim.

Every sub-command validates its arguments before doing any work and exits with a one-line
error naming the offending value.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aloe import bench, run_eval
from aloe.cli_args import parse
from aloe.cli_data import (
    CollectArgs,
    TasksArgs,
    cmd_collect,
    cmd_dataset,
    cmd_tasks,
    read_dataset_args,
)
from aloe.cli_runs import (
    ReportArgs,
    cmd_compare,
    cmd_report,
    cmd_train,
    read_compare_args,
    read_train_args,
)
from aloe.errors import UsageError, bad
from aloe.evaluation import qtrace
from aloe.extras import extra_message, extra_of, require_extra
from aloe.robot import sim as robot_sim
from aloe.serve import cli as serve_cli

EXIT_STATUS = """exit status:
  0    done
  1    `dataset check` found a problem, `dataset inspect` a dataset that does
       not fit, or a bug (its traceback)
  2    a mistake in an argument, a path or a file: one line on stderr names
       it, and nothing was written
  3    `train` stopped on a non-finite update
  130  interrupted"""


@dataclass(frozen=True)
class Command:
    """One sub-command: its line in `aloe --help`, how its arguments are read, what runs it."""

    summary: str
    """Its line in `aloe --help`."""
    args: type | Callable[[list[str], str], Any]
    """The arguments' dataclass, which tyro parses; or a function of (argv, prog) reading
    them, for a command whose argv tyro alone cannot read (train's preset, say)."""
    run: Callable[[Any], int]
    """Runs the command on its arguments; returns the exit status."""
    example: str
    """One typical command line, shown in `aloe --help` and after `aloe COMMAND --help`."""

    def __call__(self, argv: list[str], prog: str) -> int:
        read = self.args
        try:
            args = parse(read, argv, prog) if isinstance(read, type) else read(argv, prog)
        except SystemExit as e:  # tyro printed the help and leaves with 0
            if e.code in (0, None):
                print(f"\nexample:\n  {self.example}")
            raise
        return self.run(args)


COMMANDS: dict[str, Command] = {
    "tasks": Command(
        "list the supported MetaWorld tasks and their instructions",
        TasksArgs,
        cmd_tasks,
        "aloe tasks --variants",
    ),
    "collect": Command(
        "record demos, or run a policy with the operator in the loop",
        CollectArgs,
        cmd_collect,
        "aloe collect --task peg-insert-side-v3 --episodes 20 -o data/peg",
    ),
    "dataset": Command(
        "`info`/`check` a store; `inspect` a LeRobot dataset as demos",
        read_dataset_args,
        cmd_dataset,
        "aloe dataset check data/peg",
    ),
    "train": Command(
        "run Algorithm 1 (BC, then collect / critic / actor / evaluate)",
        read_train_args,
        cmd_train,
        "aloe train --preset smoke --out runs/smoke",
    ),
    "eval": Command(
        "evaluate a run, operator-free (--suite full: the whole suite)",
        run_eval.EvalArgs,
        run_eval.cmd_eval,
        "aloe eval --run runs/aloe --suite full",
    ),
    "plot-q": Command(
        "plot Q_pess along a dataset episode or a fresh rollout of a run",
        qtrace.PlotQArgs,
        qtrace.cmd_plot_q,
        "aloe plot-q --run runs/aloe --episode 12",
    ),
    "bench": Command(
        "measure speed against this machine's limits (--against REV)",
        bench.BenchArgs,
        bench.cmd_bench,
        "aloe bench --sizes default --against HEAD~1",
    ),
    "compare": Command(
        "run algorithms x seeds on one task; write a comparison report",
        read_compare_args,
        cmd_compare,
        "aloe compare --algos aloe,dagger,bc --seeds 3 --out runs/cmp",
    ),
    "report": Command(
        "(re)build the HTML report of a comparison or of a run directory",
        ReportArgs,
        cmd_report,
        "aloe report runs/cmp",
    ),
    "serve": Command(
        "serve a run's policy to robots (openpi protocol); record episodes",
        serve_cli.ServeArgs,
        lambda args: _with_extra("serve", lambda: serve_cli.cmd_serve(args)),
        "aloe serve --run runs/aloe",
    ),
    "robot": Command(
        "MetaWorld or a LeRobot robot (+ teleop) through `aloe serve`",
        robot_sim.RobotArgs,
        lambda args: _with_extra("serve", lambda: robot_sim.cmd_robot(args)),
        "aloe robot --server ws://127.0.0.1:8000 --episodes 5",
    ),
}


def _with_extra(extra: str, run: Callable[[], int]) -> int:
    """Run a command that needs `extra`: refused in one line when the extra is missing,
    before any work, or when the command's imports find one of its modules missing."""
    require_extra(extra)
    try:
        return run()
    except ModuleNotFoundError as e:
        found = extra_of(e)
        if found is None:
            raise
        raise UsageError(extra_message(found, [e.name or found])) from None


def usage() -> str:
    """`aloe --help`: every sub-command with its line and an example, then the exit statuses."""
    rows = "\n".join(
        f"  {name:10s} {c.summary}\n  {'':10s} $ {c.example}" for name, c in COMMANDS.items()
    )
    return (
        f"usage: aloe COMMAND [ARGS]\n\ncommands:\n{rows}\n\n"
        "`aloe COMMAND --help` describes each command's options;\n"
        "`aloe train --resume DIR` continues a run from its latest checkpoint, wherever\n"
        "the directory now is (with --device and --progress/--no-progress only).\n"
        "train, eval, collect, compare and bench take --progress/--no-progress: neither\n"
        "flag shows bars when stderr is a terminal and one line per phase otherwise.\n\n"
        f"{EXIT_STATUS}"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    warnings.filterwarnings("ignore", message=".*Constant\\(s\\) may be too high.*")
    try:
        return _dispatch(argv)
    except BrokenPipeError:  # `aloe tasks | head`: the reader left; say nothing more
        _stdout_to_devnull()
        return 0
    finally:  # a reader that left shows up here, not as "Exception ignored" at exit
        _flush_stdout()


def _dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, *rest = argv
    if name not in COMMANDS:
        print(
            f"aloe: error: {bad('unknown command', name, 'one of ' + ', '.join(COMMANDS))}",
            file=sys.stderr,
        )
        return 2
    try:
        return COMMANDS[name](rest, f"aloe {name}")
    except UsageError as e:
        print(f"aloe {name}: error: {e}", file=sys.stderr)
        return 2


def _flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _stdout_to_devnull()


def _stdout_to_devnull() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())

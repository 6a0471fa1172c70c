"""The `aloe` command line: one program, one sub-command per job, all in one table.

`COMMANDS` maps each sub-command's name to its line in `aloe --help`, how its arguments are
read (a dataclass tyro parses, or a function of argv) and the function that runs it; the
top-level usage, the "unknown command" message and the dispatch are all read from it.

Every sub-command validates its arguments before doing any work and exits with a one-line
error naming the offending value.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import typing
import warnings
from collections.abc import Callable, Generator
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, make_dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

import tyro

from aloe import bench, compare, run_eval, train
from aloe.algos.table import ALGORITHMS, unread_fields, unread_option
from aloe.cli_args import parse
from aloe.config import PRESETS, TrainConfig, preset
from aloe.envs.tasks import DEFAULT_TASK
from aloe.errors import UsageError, bad, require
from aloe.evaluation import qtrace
from aloe.progress import Progress

EXIT_STATUS = """exit status:
  0    done
  1    `dataset check` found a problem, or a bug (its traceback)
  2    a mistake in an argument, a path or a file: one line on stderr names
       it, and nothing was written
  3    `train` stopped on a non-finite update
  130  interrupted"""


@dataclass
class TasksArgs:
    """List the supported tasks."""

    verify: bool = False
    """Also run each task's scripted expert on 10 seeds and report its success and length."""
    variants: bool = False
    """Also list each task's evaluation variants (unseen objects); with --verify, the
    expert's success on 5 seeds of each (is the variant solvable?)."""


def cmd_tasks(args: TasksArgs) -> int:
    from aloe.envs.registry import backend_of, operator_episode_length
    from aloe.envs.tasks import INSTRUCTIONS, supported_tasks

    for name in supported_tasks():
        line = f"{name:32s} {INSTRUCTIONS[name]}"
        if args.verify:
            line += f"   (expert: {operator_episode_length(name):.0f} steps)"
        print(line)
        variants = backend_of(name).suite.variants
        if args.variants and variants is not None:
            from aloe.evaluation.variants import expert_success

            for v in variants.of(name)[1:]:
                solved = f"   (expert: {expert_success(name, v):.0%})" if args.verify else ""
                print(f"    {v.name:16s} {v.description}{solved}")
    print_uninstalled_tasks()
    return 0


def print_uninstalled_tasks() -> None:
    """After `aloe tasks`' list: the tasks of simulators not installed, and their extra."""
    from aloe.envs.tasks import uninstalled_tasks
    from aloe.extras import install_hint

    for extra, tasks in uninstalled_tasks().items():
        print(
            f"\nnot installed: {len(tasks)} {extra} tasks ({', '.join(tasks)}); "
            f"{install_hint(extra)} adds them"
        )


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
    """Episode i of the store uses seed + i: collecting into a store that holds N episodes
    continues at seed + N, so a restarted collection records no seed twice (seeds the store
    holds already, or another collector into it is recording, are skipped)."""
    max_steps: int = 300
    """Time limit of the policy's attempt (or of a demonstration)."""
    profile: str = "oracle"
    """Operator profile: oracle (the scripted expert with --noise and --delay) | human (a
    simulated VR teleoperator, with `aloe train`'s operator.human defaults)."""
    noise: float = 0.1
    """Operator action noise (std; oracle profile)."""
    delay: int = 0
    """Operator reaction delay in steps (oracle profile)."""
    patience: int = 60
    """Operator takes over after this many steps without progress (0 = only on failure)."""
    handback_steps: int = 0
    """0: the operator completes the task; > 0: hands control back after this many steps."""
    allow_new_task: bool = False
    """Let --task add a task to a store that holds episodes of other tasks only (without
    it, that is refused: a store is usually one task's)."""
    progress: Progress = None
    """Progress on stderr: neither flag, a bar when stderr is a terminal, else one line when
    done; --progress, a bar; --no-progress, neither (aloe.progress)."""


def cmd_collect(args: CollectArgs) -> int:
    from aloe.collect import CollectConfig, collect
    from aloe.envs.base import EnvConfig
    from aloe.envs.registry import make_env
    from aloe.envs.tasks import task_list
    from aloe.operators.profiles import make_operator
    from aloe.operators.scripted import OperatorConfig
    from aloe.policies.chunk_policy import RandomPolicy

    try:
        one_task = len(task_list(args.task)) == 1  # sim.state's size differs between tasks
    except ValueError as e:
        raise bad("--task", args.task, str(e)) from None
    require(args.episodes >= 1, "--episodes", args.episodes, "must be >= 1")
    require(0 <= args.seed < 2**31, "--seed", args.seed, "must be in 0..2**31-1")
    most = 2**31 - args.seed
    require(
        args.episodes <= most,
        "--episodes",
        args.episodes,
        f"must be <= {most} (seeds stay below 2**31: --seed + --episodes <= 2**31)",
    )
    require(args.max_steps >= 1, "--max-steps", args.max_steps, "must be >= 1")
    op_cfg = OperatorConfig(
        profile=args.profile, noise_std=args.noise, delay_steps=args.delay, patience=args.patience
    )
    cfg = CollectConfig(
        success_quota=args.episodes,
        max_episodes=args.episodes,
        handback_steps=args.handback_steps,
        record_sim_state=one_task,
    )
    _as_collect_flags(op_cfg.validate)
    _as_collect_flags(cfg.validate)
    _require_store_location(args.out)
    policy = _load_collect_policy(args.policy, args.seed)  # a run's is checked before any work
    env = make_env(EnvConfig(task=args.task, max_steps=args.max_steps))
    if args.policy == "random":
        policy = RandomPolicy(env.action_dim, seed=args.seed)  # the task's action size
    store = _collect_store(args.out, env, one_task)
    _require_same_task(store, task_list(args.task), args.allow_new_task, args.out)
    operator = make_operator(args.task, op_cfg, seed=args.seed)
    with contextlib.closing(_continue_seeds(store, args.seed, args.episodes)) as seeds:
        _, stats = collect(
            env, operator, cfg, policy=policy, seeds=seeds, store=store, progress=args.progress
        )
    summary = stats.summary(policy=args.policy is not None)
    print(json.dumps({"out": str(args.out), **summary}, indent=1))
    return 0


# The config fields `aloe collect`'s flags set, so a config check names the flag typed.
_COLLECT_FLAGS = {
    "operator.profile": "--profile",
    "operator.noise_std": "--noise",
    "operator.delay_steps": "--delay",
    "operator.patience": "--patience",
    "collect.handback_steps": "--handback-steps",
    "collect.max_episodes": "--episodes",
    "collect.success_quota": "--episodes",
}


def _as_collect_flags(validate: Callable[[], None]) -> None:
    """Run a config's `validate()` (the checks `aloe train` runs), naming flags, not fields."""
    try:
        validate()
    except UsageError as e:
        field, _, rest = str(e).partition(" ")
        raise UsageError(f"{_COLLECT_FLAGS.get(field, field)} {rest}") from None


def _require_store_location(out: Path) -> None:
    from aloe.datasets.store import location_problem

    problem = location_problem(out)
    if problem:
        raise bad("--out", out, problem)


def _collect_store(out: Path, env: Any, one_task: bool) -> Any:
    """The store at `out` to grow, refused before any episode if it records other columns."""
    from aloe.datasets.store import EpisodeStore, StoreError, StoreMismatch, StoreRefused

    try:
        return EpisodeStore.open_or_create(
            out,
            fps=1.0 / env.control_period,
            state_dim=env.state_dim,
            action_dim=env.action_dim,
            sim_state_dim=env.sim_state_dim if one_task else None,
            cameras=None,
        )
    except StoreMismatch as e:
        raise bad("--out", out, f"{e.reason}: use another --out") from None
    except StoreRefused as e:
        raise bad("--out", out, e.reason) from None
    except StoreError as e:
        raise bad("--out", out, f"not a readable aloe store: {e}") from None


def _require_same_task(store: Any, tasks: list[str], allow_new: bool, out: Path) -> None:
    """Refuse to add a task to a store that holds episodes of other tasks, unless allowed."""
    held = set(store.episodes()["task_name"].to_pylist())
    new = [t for t in tasks if t not in held]
    if held and new and not allow_new:
        raise bad(
            "--task",
            new[0],
            f"{out} holds episodes of {sorted(held)} only; give --allow-new-task to add "
            "another task to it, or another --out",
        )


def _continue_seeds(store: Any, seed: int, episodes: int) -> Generator[int, None, None]:
    """The next seeds, claimed one at a time (`EpisodeStore.claim_seeds`): episode i of the
    store uses seed + i, and a seed the store holds already (its episodes-meta `seed`
    column) or another collector is recording is skipped, so none is recorded twice."""
    n = store.num_episodes
    if n:
        # the seeds a lone collector skips: each one held extends the range by one
        last = seed + n + episodes - 1
        skipped = []
        for s in sorted(s for s in store.episodes()["seed"].to_pylist() if s is not None):
            if seed + n <= s <= last:
                skipped.append(s)
                last += 1
        note = f"; skipping seeds {skipped}, which it holds already" if skipped else ""
        held_n = f"{n} episode" + "s" * (n != 1)
        print(
            f"aloe collect: {store.root} holds {held_n}: continuing at episode {n}, "
            f"seed {seed + n}{note}",
            file=sys.stderr,
        )
    return store.claim_seeds(seed + n)


def _load_collect_policy(spec: str | None, seed: int) -> Any:
    """A run's chunk policy for --policy DIR; None for no policy and for 'random' (built
    once the env gives its action size)."""
    if spec is None or spec == "random":
        return None
    from aloe.run import load_run, require_run_dir

    run = Path(spec)
    require_run_dir(run, "--policy", "give 'random' or a run directory written by `aloe train`")
    return load_run(run, what="--policy").chunk_policy(seed=seed)


@dataclass
class DatasetArgs:
    """Summarise or validate an episode store."""

    action: tyro.conf.Positional[Literal["info", "check"]]
    """`info` prints a summary; `check` validates every file (exit 1 on any problem)."""
    root: tyro.conf.Positional[Path]
    """The store's directory."""
    fast: bool = False
    """`check` only: skip comparing each file's sha256 with meta/checksums.json."""


def cmd_dataset(args: DatasetArgs) -> int:
    from aloe.datasets import cli as dataset_cli

    if args.action == "info":
        return dataset_cli.info(args.root)
    return dataset_cli.check(args.root, args.fast)


def read_dataset_args(argv: list[str], prog: str) -> DatasetArgs:
    """`aloe dataset {info,check} PATH`; `--help` after the action shows the whole usage
    (tyro would take the action first and leave it out of the usage line)."""
    if "-h" in argv or "--help" in argv:
        argv = ["--help"]
    args: DatasetArgs = parse(DatasetArgs, argv, prog)
    return args


class TrainRequest(NamedTuple):
    """What `aloe train` was asked: a run's config, and whether it continues that run."""

    config: TrainConfig
    resume: bool
    scale: Any = None  # aloe.distributed.options.Scale: --workers, --learner-procs, ...
    argv: tuple[str, ...] = ()  # the command without --learner-procs (for torchrun)


def read_train_args(argv: list[str], prog: str) -> TrainRequest:
    """`aloe train [--preset P] [--task T] [--algo A] [--<any config field> V]`, or
    `aloe train --resume DIR [--device D] [--progress | --no-progress]`. The preset and the
    algorithm are read first: the preset chooses the defaults tyro parses the other flags
    against and shows in --help, the algorithm which option groups there are (its own, not
    the other algorithms', `train_arguments`).
    `--workers N [--ray-address A] [--worker-timeout S] [--learner-procs P]`, with either,
    say how the run is spread (aloe.distributed), not what it computes."""
    scale, argv, again = _scale_args(argv)
    known, rest = _known_args(
        argv, [("--preset", None), ("--task", None), ("--algo", None), ("--resume", Path)]
    )
    if known.resume is not None and not {"-h", "--help"} & set(rest):
        return TrainRequest(_resume_config(known, rest), True, scale, (*argv, *again))
    name = known.preset or "default"
    base = preset(name, known.task)
    algo = known.algo or base.algo
    require(algo in ALGORITHMS, "--algo", algo, f"must be one of {', '.join(ALGORITHMS)}")
    base.algo = algo
    _refuse_unread(rest, algo)
    description = (
        f"Run Algorithm 1 with --algo {algo} (--algo {' | '.join(ALGORITHMS)}; each shows its "
        f"own options). Defaults below are the {name!r} preset "
        f"(--preset {' | '.join(PRESETS)}).\n\n"
        "To continue the run in DIR (wherever it now is) from its latest checkpoint:\n"
        "  aloe train --resume DIR [--device D] [--progress | --no-progress]"
    )
    view = train_arguments(algo)
    default = _convert(view, base)
    args = parse(view, rest + ["--preset", name], prog, default=default, description=description)
    return TrainRequest(_convert(TrainConfig, args), False, scale, (*argv, *again))


def train_arguments(algo: str) -> type:
    """`TrainConfig` as `aloe train --algo ALGO` reads it: the fields an ALGO run never reads
    (`unread_fields`) suppressed (`tyro.conf.Suppress`: not in --help, not parsed, kept at
    the preset's values), so that its --help lists only what changes an ALGO run."""
    return _suppressed(TrainConfig, set(unread_fields(algo)))


def _suppressed(cls: type, hidden: set[str]) -> type:
    """A subclass of the dataclass `cls` whose fields named in `hidden` (dotted, from `cls`)
    tyro leaves out; a field of a nested dataclass becomes a field of a subclass of it."""
    hints = typing.get_type_hints(cls)
    own = {f.name: f for f in fields(cls)}
    changed = []
    for name in dict.fromkeys(h.partition(".")[0] for h in hidden):
        inner = {h.partition(".")[2] for h in hidden if h.partition(".")[0] == name}
        if "" in inner:  # the whole field
            hint: Any = Annotated[hints[name], tyro.conf.Suppress]
            changed.append((name, hint, _default_of(own[name])))
        else:
            view = _suppressed(hints[name], inner)
            changed.append((name, view, field(default_factory=view)))
    return make_dataclass(cls.__name__, changed, bases=(cls,)) if changed else cls


def _default_of(f: Any) -> Any:
    if f.default_factory is not MISSING:
        return field(default_factory=f.default_factory)
    return field(default=f.default)


def _convert(cls: type, obj: Any) -> Any:
    """`obj`, a dataclass of `cls`'s fields (or of a view's), as a `cls`, nested ones too."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in fields(cls):
        value = getattr(obj, f.name)
        hint = hints[f.name]
        nested = isinstance(hint, type) and is_dataclass(hint)
        values[f.name] = _convert(hint, value) if nested else value
    return cls(**values)


def _refuse_unread(argv: list[str], algo: str) -> None:
    """An option of a field the run never reads (`--aloe.beta` with `--algo awr`) would
    change nothing: refuse it, saying whose it is."""
    for token in argv:
        why = unread_option(token, algo)
        if why is not None:
            flag = token.partition("=")[0].replace("_", "-")
            raise bad(flag, allowed=f"{why}; see aloe train --algo {algo} --help")


SCALE_FLAGS = ("--workers", "--ray-address", "--worker-timeout", "--learner-procs")


def _scale_args(argv: list[str]) -> tuple[Any, list[str], list[str]]:
    """(Scale, argv without its flags, the flags to pass on to torchrun's processes)."""
    from aloe.distributed.options import Scale

    flags, rest = _known_args(argv, [(f, None) for f in SCALE_FLAGS])
    values = [getattr(flags, f[2:].replace("-", "_")) for f in SCALE_FLAGS]
    again = [
        t for f, v in zip(SCALE_FLAGS[:3], values, strict=False) if v is not None for t in (f, v)
    ]
    return Scale.from_flags(*values), rest, again


def cmd_train(request: TrainRequest) -> int:
    """Train (or resume), then the closing summary on stderr (aloe.run_summary); stdout
    stays empty: metrics.jsonl is the machine-readable record."""
    cfg = request.config
    start = time.time()
    scale = request.scale
    if scale is not None and scale.learner_procs > 1 and "WORLD_SIZE" not in os.environ:
        from aloe.distributed.ddp import relaunch

        return relaunch(cfg, request.resume, list(request.argv), scale)
    try:
        if scale is not None and scale.distributed:
            from aloe.distributed import launch

            history = launch.train(cfg, request.resume, scale)
        else:
            history = train.train(cfg, resume=request.resume)
    except KeyboardInterrupt:  # Ctrl-C: what is committed is safe; say how to go on
        print(interrupted_line(cfg.out), file=sys.stderr)
        return 130
    except FloatingPointError as e:  # the guard fired before the bad update was applied
        from aloe import checkpoint

        last = checkpoint.latest(cfg.out / "checkpoints")
        kept = f"the last good checkpoint is {last[1]}" if last else "no checkpoint was written"
        print(f"aloe train: stopped: {e}; {kept}", file=sys.stderr)
        return 3
    from aloe.run_summary import summary

    if os.environ.get("RANK", "0") != "0":
        return 0  # a torchrun learner process: the run's summary is rank 0's
    report = cfg.out / "report.html"
    fresh = report.is_file() and report.stat().st_mtime >= start  # this run's, not a stale one
    print(
        summary(cfg, history, time.time() - start, request.resume, report if fresh else None),
        file=sys.stderr,
    )
    return 0


def interrupted_line(out: Path) -> str:
    """The one line an interrupted `aloe train` prints: how to continue, from which checkpoint."""
    from aloe import checkpoint

    if not (out / "config.json").is_file():
        return f"aloe train: interrupted before {out} was started; nothing to resume"
    last = checkpoint.latest(out / "checkpoints")
    kept = f"the last checkpoint is {last[1]}" if last else "no checkpoint yet"
    return f"aloe train: interrupted; `aloe train --resume {out}` continues ({kept})"


def _known_args(argv: list[str], options: list[tuple[str, Any]]) -> tuple[Any, list[str]]:
    """Pick `options` (flag, type; None = str; bool = --flag/--no-flag) out of argv; the rest
    is returned as is, in order. Each flag is read as tyro reads every aloe flag (`--flag V`,
    `--flag=V`, `--flag_name` for `--flag-name`); one without its value is a UsageError."""
    known = make_dataclass(
        "KnownArgs",
        [
            (flag[2:].replace("-", "_"), _known_type(kind), field(default=None))
            for flag, kind in options
        ],
    )
    args, rest = parse(known, argv, "aloe train", return_unknown_args=True, add_help=False)
    return args, rest


def _known_type(kind: Any) -> Any:
    """An option's type for tyro: str (`kind` None) or Path, None when not given (`--resume
    None` is the directory "None"); a bool is --flag/--no-flag."""
    return {None: _OptionalStr, Path: _OptionalPath, bool: Progress}[kind]


_OptionalStr = tyro.conf.DisallowNone[str | None]
_OptionalPath = tyro.conf.DisallowNone[Path | None]


def _resume_config(known: Any, rest: list[str]) -> Any:
    """`--resume DIR` with only the options that keep the run's meaning (RESUME_OPTIONS)."""
    given, others = _known_args(rest, [("--device", None), ("--progress", bool)])
    pre = ("--preset", "--task", "--algo")
    refused = [*others, *(f for f in pre if getattr(known, f[2:]) is not None)]
    if refused:
        flag = next((t for t in refused if t.startswith("-")), refused[0]).split("=")[0]
        raise UsageError(
            f"--resume ({flag}): only --progress/--no-progress and --device may be "
            f"given with --resume; the run's config is "
            f"{known.resume / 'config.json'}"
        )
    return train.resumed_config(known.resume, device=given.device, progress=given.progress)


def read_compare_args(argv: list[str], prog: str) -> compare.CompareArgs:
    _require_attached_train_args(argv)
    args: compare.CompareArgs = parse(compare.CompareArgs, argv, prog)
    return args


def cmd_compare(args: compare.CompareArgs) -> int:
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
    steps = {a: s["mean_steps_to_success"] for a, s in summary["algos"].items()}
    print(
        json.dumps(
            {
                "report": str(args.out / compare.REPORT),
                "final_success": finals,
                "steps_to_success": steps,
            }
        )
    )
    return 0


def _require_attached_train_args(argv: list[str]) -> None:
    """`--train-args '--aloe.beta -1'` parses its value as an option: say to attach it."""
    import shlex

    for flag, value in zip(argv, argv[1:], strict=False):
        if flag in ("--train-args", "--train_args") and value.startswith("-"):
            raise bad(
                "--train-args",
                value,
                "a value starting with '-' must be attached "
                f"with '=': --train-args={shlex.quote(value)}",
            )


@dataclass
class ReportArgs:
    """Rebuild a report from disk: a comparison's (summary.json or runs/) or a single run's."""

    dir: tyro.conf.Positional[Path]
    """A directory written by `aloe compare` or by `aloe train`."""


def cmd_report(args: ReportArgs) -> int:
    import importlib
    import importlib.util

    hint = "give a directory written by `aloe compare` or `aloe train`"
    require(args.dir.exists(), "DIR", args.dir, f"does not exist; {hint}")
    require(args.dir.is_dir(), "DIR", args.dir, f"is a file; {hint}")
    if compare.is_comparison(args.dir):
        compare.write_report(args.dir)
        print(args.dir / compare.REPORT)
        return 0
    require(
        (args.dir / "config.json").is_file(),
        "DIR",
        args.dir,
        f"neither a comparison (no summary.json or runs/) nor a run (no config.json); {hint}",
    )
    if importlib.util.find_spec("aloe.evaluation.report") is None:
        raise UsageError(
            f"{args.dir} is not a comparison (no summary.json or runs/), and "
            "run reports need aloe.evaluation.report, which this install lacks"
        )
    report = importlib.import_module("aloe.evaluation.report")
    print(report.build_run_report(args.dir))
    return 0


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
        "`info` summarises an episode store, `check` validates it",
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
        lambda argv, prog: parse(_serve().ServeArgs, argv, prog),
        lambda args: _with_extra("serve", lambda: _serve().cmd_serve(args)),
        "aloe serve --run runs/aloe",
    ),
    "robot": Command(
        "MetaWorld as a robot through `aloe serve`, the operator as teleop",
        lambda argv, prog: parse(_robot().RobotArgs, argv, prog),
        lambda args: _with_extra("serve", lambda: _robot().cmd_robot(args)),
        "aloe robot --server ws://127.0.0.1:8000 --episodes 5",
    ),
}


def _serve() -> Any:
    """aloe.serve.cli, imported on use; its arguments (and --help) need no extra."""
    import aloe.serve.cli

    return aloe.serve.cli


def _robot() -> Any:
    """aloe.robot.sim, imported on use; its arguments (and --help) need no extra."""
    import aloe.robot.sim

    return aloe.robot.sim


def _with_extra(extra: str, run: Callable[[], int]) -> int:
    """Run a command that needs `extra`: refused in one line when the extra is missing,
    before any work, or when the command's imports find one of its modules missing."""
    from aloe.extras import extra_message, extra_of, require_extra

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

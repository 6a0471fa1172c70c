"""The commands of runs: `aloe train` (a run, or its continuation with --resume), `aloe
compare` (algorithms x seeds on one task, with its report) and `aloe report` (a comparison's
or a run's report, rebuilt from disk)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shlex
import sys
import time
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, make_dataclass
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import tyro

from aloe import checkpoint, compare, compare_dir, run_summary, train
from aloe.algos.table import ALGORITHMS, unread_fields, unread_option
from aloe.cli_args import parse
from aloe.config import PRESETS, TrainConfig, preset
from aloe.distributed import launch
from aloe.distributed.ddp import relaunch
from aloe.distributed.options import Scale
from aloe.errors import UsageError, bad, require
from aloe.progress import Progress


class TrainRequest(NamedTuple):
    """What `aloe train` was asked: a run's config, and whether it continues that run."""

    config: TrainConfig
    resume: bool
    scale: Scale | None = None  # --workers, --learner-procs, ...
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


# what a run reads from its dataset, never from flags: a robot run's sizes (aloe.run_demos)
DERIVED = {"env.robot"}


def train_arguments(algo: str) -> type:
    """`TrainConfig` as `aloe train --algo ALGO` reads it: the fields an ALGO run never reads
    (`unread_fields`) and those read from the run's dataset (`DERIVED`) suppressed
    (`tyro.conf.Suppress`: not in --help, not parsed, kept at the preset's values), so that
    its --help lists only what changes an ALGO run."""
    return _suppressed(TrainConfig, set(unread_fields(algo)) | DERIVED)


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


def _scale_args(argv: list[str]) -> tuple[Scale, list[str], list[str]]:
    """(Scale, argv without its flags, the flags to pass on to torchrun's processes)."""
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
        return relaunch(cfg, request.resume, list(request.argv), scale)
    try:
        if scale is not None and scale.distributed:
            history = launch.train(cfg, request.resume, scale)
        else:
            history = train.train(cfg, resume=request.resume)
    except KeyboardInterrupt:  # Ctrl-C: what is committed is safe; say how to go on
        print(interrupted_line(cfg.out), file=sys.stderr)
        return 130
    except FloatingPointError as e:  # the guard fired before the bad update was applied
        last = checkpoint.latest(cfg.out / "checkpoints")
        kept = f"the last good checkpoint is {last[1]}" if last else "no checkpoint was written"
        print(f"aloe train: stopped: {e}; {kept}", file=sys.stderr)
        return 3

    if os.environ.get("RANK", "0") != "0":
        return 0  # a torchrun learner process: the run's summary is rank 0's
    report = cfg.out / "report.html"
    fresh = report.is_file() and report.stat().st_mtime >= start  # this run's, not a stale one
    print(
        run_summary.summary(
            cfg, history, time.time() - start, request.resume, report if fresh else None
        ),
        file=sys.stderr,
    )
    return 0


def interrupted_line(out: Path) -> str:
    """The one line an interrupted `aloe train` prints: how to continue, from which checkpoint."""
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
                "report": str(args.out / compare_dir.REPORT),
                "final_success": finals,
                "steps_to_success": steps,
            }
        )
    )
    return 0


def _require_attached_train_args(argv: list[str]) -> None:
    """`--train-args '--aloe.beta -1'` parses its value as an option: say to attach it."""
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
    hint = "give a directory written by `aloe compare` or `aloe train`"
    require(args.dir.exists(), "DIR", args.dir, f"does not exist; {hint}")
    require(args.dir.is_dir(), "DIR", args.dir, f"is a file; {hint}")
    if compare_dir.is_comparison(args.dir):
        compare.write_report(args.dir)
        print(args.dir / compare_dir.REPORT)
        return 0
    require(
        (args.dir / "config.json").is_file(),
        "DIR",
        args.dir,
        f"neither a comparison (no summary.json or runs/) nor a run (no config.json); {hint}",
    )
    # imported by name, not at the top: an install may leave run reports out (the message below)
    if importlib.util.find_spec("aloe.evaluation.report") is None:
        raise UsageError(
            f"{args.dir} is not a comparison (no summary.json or runs/), and "
            "run reports need aloe.evaluation.report, which this install lacks"
        )
    report = importlib.import_module("aloe.evaluation.report")
    print(report.build_run_report(args.dir))
    return 0

"""The commands of tasks and demonstrations: `aloe tasks` (the supported tasks), `aloe
collect` (record demonstrations, or run a policy with the operator in the loop, into an
episode store) and `aloe dataset` (summarise or check a store, inspect a LeRobot dataset)."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

from aloe.cli_args import parse
from aloe.collect import CollectConfig, collect
from aloe.config import preset
from aloe.datasets import cli as dataset_cli
from aloe.datasets.demos import Demos, DemosMap, DemosPlan
from aloe.datasets.store import (
    EpisodeStore,
    StoreError,
    StoreMismatch,
    StoreRefused,
    location_problem,
)
from aloe.envs.base import EnvConfig
from aloe.envs.registry import backend_of, make_env, operator_episode_length, simulated
from aloe.envs.tasks import (
    DEFAULT_TASK,
    INSTRUCTIONS,
    supported_tasks,
    task_list,
    uninstalled_tasks,
)
from aloe.errors import UsageError, bad, require
from aloe.evaluation.variants import expert_success
from aloe.extras import install_hint
from aloe.operators.profiles import make_operator
from aloe.operators.scripted import OperatorConfig
from aloe.policies.chunk_policy import RandomPolicy
from aloe.progress import Progress
from aloe.run import load_run, require_run_dir
from aloe.run_demos import demos_target
from aloe.run_robot import robot_run


@dataclass
class TasksArgs:
    """List the supported tasks."""

    verify: bool = False
    """Also run each task's scripted expert on 10 seeds and report its success and length."""
    variants: bool = False
    """Also list each task's evaluation variants (unseen objects); with --verify, the
    expert's success on 5 seeds of each (is the variant solvable?)."""


def cmd_tasks(args: TasksArgs) -> int:
    for name in supported_tasks():
        line = f"{name:32s} {INSTRUCTIONS[name]}"
        if args.verify and simulated(name):  # a robot run's row has no expert
            line += f"   (expert: {operator_episode_length(name):.0f} steps)"
        print(line)
        variants = backend_of(name).suite.variants
        if args.variants and variants is not None:
            for v in variants.of(name)[1:]:
                solved = f"   (expert: {expert_success(name, v):.0%})" if args.verify else ""
                print(f"    {v.name:16s} {v.description}{solved}")
    print_uninstalled_tasks()
    return 0


def print_uninstalled_tasks() -> None:
    """After `aloe tasks`' list: the tasks of simulators not installed, and their extra."""
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
    simulated VR teleoperator, with `aloe train`'s operator.human defaults) | clumsy (that
    person three times as error-prone: its corrections succeed about half of the time)."""
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
    try:
        one_task = len(task_list(args.task)) == 1  # sim.state's size differs between tasks
    except ValueError as e:
        raise bad("--task", args.task, str(e)) from None
    require(
        simulated(args.task),
        "--task",
        args.task,
        "has no simulator to collect in: a robot's episodes come from `aloe robot`",
    )
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
    problem = location_problem(out)
    if problem:
        raise bad("--out", out, problem)


def _collect_store(out: Path, env: Any, one_task: bool) -> Any:
    """The store at `out` to grow, refused before any episode if it records other columns."""
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

    run = Path(spec)
    require_run_dir(run, "--policy", "give 'random' or a run directory written by `aloe train`")
    return load_run(run, what="--policy").chunk_policy(seed=seed)


@dataclass
class DatasetArgs:
    """Summarise or validate an episode store, or inspect a LeRobot dataset as demos."""

    action: tyro.conf.Positional[Literal["info", "check", "inspect"]]
    """`info` prints a summary; `check` validates every file (exit 1 on any problem);
    `inspect` prints what a LeRobotDataset v3 (or a store) holds and what `aloe train
    --demos PATH` reads of it (exit 1 if that does not fit)."""
    root: tyro.conf.Positional[Path]
    """The store's (or the dataset's) directory."""
    fast: bool = False
    """`check` only: skip comparing each file's sha256 with meta/checksums.json."""
    task: str | None = None
    """`inspect` only: also check that `aloe train --task TASK --demos PATH` (with --preset,
    --horizon, --obs and --demos-map.*) takes the dataset, as that run checks it."""
    preset: str = "default"
    """`inspect --task` only: the run's preset."""
    horizon: int | None = None
    """`inspect --task` only: the run's chunk length (default: the preset's)."""
    obs: str = "state"
    """`inspect --task` only: state | image (the preset's cameras, --demos-map.cameras)."""
    demos_map: DemosMap = field(default_factory=DemosMap)
    """`inspect` only: which features are the state, the action, the cameras, the
    instruction (as `aloe train --demos-map.*`)."""


def cmd_dataset(args: DatasetArgs) -> int:
    if args.action == "inspect":
        plan, run = _inspect_run(args)
        return dataset_cli.inspect(args.root, args.demos_map, plan, run)
    if args.action == "info":
        return dataset_cli.info(args.root)
    return dataset_cli.check(args.root, args.fast)


def _inspect_run(args: DatasetArgs) -> tuple[Callable[[Demos], DemosPlan] | None, str]:
    """`aloe train`'s check of `--demos` on the run `inspect --task` describes, and that
    run as a command line; (None, "") without --task."""
    if args.task is None:
        return None, ""
    cfg = preset(args.preset, args.task)
    cfg.demos, cfg.demos_map, cfg.obs = args.root, args.demos_map, args.obs
    if args.horizon is not None:
        cfg.horizon = args.horizon
        cfg.exec_horizon = min(cfg.exec_horizon, args.horizon)
    cfg.validate()
    cfg = cfg.resolved()
    run = f"aloe train --task {args.task} --preset {args.preset} --horizon {cfg.horizon}"
    run += f" --obs {cfg.obs}" if cfg.obs != "state" else ""
    if not simulated(cfg.task):  # a robot run: its sizes are the dataset's
        return lambda demos: robot_run(cfg, demos)[1], run
    env = make_env(cfg.env)
    return lambda demos: demos.plan(demos_target(cfg, env)), run


def read_dataset_args(argv: list[str], prog: str) -> DatasetArgs:
    """`aloe dataset {info,check,inspect} PATH`; `--help` after the action shows the whole
    usage (tyro would take the action first and leave it out of the usage line)."""
    if "-h" in argv or "--help" in argv:
        argv = ["--help"]
    args: DatasetArgs = parse(DatasetArgs, argv, prog)
    return args

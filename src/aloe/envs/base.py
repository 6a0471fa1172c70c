"""What the rest of aloe asks of a simulator: the environment protocol, the settings every
simulator shares, and the row (`Backend`) each simulator adds to `aloe.envs.registry.BACKENDS`.

An observation is a dict with at least `state` (float32 (S,)) and `instruction` (str), and
`images` (camera name -> uint8 (H, W, 3)) when the backend has cameras; `privileged` holds
what a scripted operator reads off the scene and a policy never sees. A step's `info`
carries `success` (bool), `failure_reason` ("" unless the episode failed) and `progress`
(the task's dense progress signal, which the operator's watch reads).

Nothing here imports a simulator: the rows' modules import this one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol

import numpy as np

from aloe.envs.failures import FailureConfig
from aloe.envs.ogbench_tasks import OGBenchFailures
from aloe.envs.robot_spec import RobotSpec
from aloe.errors import require

Obs = dict[str, Any]
Info = dict[str, Any]

DEFAULT_TASK = "pick-place-v3"
"""The default task of training and comparisons: with 2 noisy demonstrations BC alone
succeeds 7-10 % of the time, in the paper's BC range (docs/results.md)."""
MAX_CAMERAS = 3  # the paper's policy sees up to three views


class EpisodeEnv(Protocol):
    """One task, run as the paper's episodic MDP (Eq. 14 rewards, labelled failures)."""

    task: str  # the current task's name (a multi-task env selects it at reset)
    instruction: str  # its natural-language instruction
    steps: int  # steps since the reset
    limit: int  # the step count at which the acting party's time runs out (truncation)
    control_period: float  # seconds per step (1 / the control rate)

    @property
    def max_steps(self) -> int:
        """The policy's time limit per episode, in steps."""
        ...

    @property
    def state_dim(self) -> int:
        """The width of `obs["state"]`."""
        ...

    @property
    def action_dim(self) -> int:
        """The width of an action."""
        ...

    @property
    def sim_state_dim(self) -> int:
        """The width of `sim_state()`."""
        ...

    def reset(self, *, seed: int) -> tuple[Obs, Info]:
        """A new episode; everything about it (initial state, task) follows from `seed`."""
        ...

    def step(self, action: np.ndarray) -> tuple[Obs, float, bool, bool, Info]:
        """(next obs, Eq. 14 reward, terminated, truncated, info) for an action in [-1, 1]."""
        ...

    def reward(self, *, success: bool, failed: bool) -> float:
        """Eq. 14: 0 at a successful end, −C_fail at a failed end, −1 otherwise."""
        ...

    def reset_progress(self) -> None:
        """A new actor takes over: judge a lack of progress from here on."""
        ...

    def hand_to(self, actor: str) -> None:
        """`actor` ("policy" or "operator") acts from the next step on: action-level failure
        events judge the policy's actions only (a reset hands control to the policy)."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """Everything needed to put the world back exactly here."""
        ...

    def restore(self, snap: dict[str, Any]) -> Obs:
        """Put the world back to `snap`; the observation there."""
        ...

    def sim_state(self) -> np.ndarray:
        """The simulator's state vector alone (what the store keeps per step)."""
        ...

    def close(self) -> None:
        """Release what the env holds (renderers); it stays usable."""
        ...


@dataclass
class EnvConfig:
    """How a task is turned into the paper's episodic task. `failures`, `ogbench` and `robot`
    are the MetaWorld, OGBench and robot rows' own sections (each validated by its row)."""

    task: str = DEFAULT_TASK
    """Task name (`aloe tasks` lists them), or several: a suite (mt10) or a comma-separated
    list, reset seeds taking them in turn."""
    max_steps: int = 300
    """Time limit of the policy's attempt, in steps (MetaWorld's own limit is 500)."""
    c_fail: float | None = None
    """Eq. 14 failure cost; None = mean length of the task's expert episodes (as the paper)."""
    timeout_is_failure: bool = True
    """The paper labels a time-out a failure (−C_fail, no bootstrap); False = truncation."""
    failures: FailureConfig = field(default_factory=FailureConfig)
    """Failure detectors (MetaWorld; on OGBench tasks the stall detector's fields)."""
    ogbench: OGBenchFailures = field(default_factory=OGBenchFailures)
    """Failure events of the OGBench tasks (`aloe.envs.ogbench_tasks`)."""
    robot: RobotSpec = field(default_factory=RobotSpec)
    """A robot run's sizes, read from its --demos dataset (`aloe.envs.robot_spec`)."""
    cameras: tuple[str, ...] = ()
    """Cameras whose images every observation carries (at most 3, as the paper), named as
    the task's scene names them (`aloe.envs.registry.camera_names`). Empty = state only."""
    image_size: int = 64
    """Height = width of the camera images, in pixels."""
    fast_render: bool = True
    """Render without shadows, reflections and the skybox (much cheaper on a CPU);
    False = the simulator's own look."""

    def validate(self, prefix: str = "") -> None:
        """Raise UsageError naming the first field out of range, `env.max_steps (0): must be
        >= 1`; `prefix` leads the name ("config field " for a run's config). The cameras must
        be the task's, and each backend checks its own section (`Backend.validate`). The task
        is checked by `aloe.envs.tasks.task_list`."""
        try:
            cameras = backend_of(self.task).cameras
        except KeyError:  # an unknown task: the config's task check names it
            cameras = self.cameras
        if cameras is None:  # the robot row's: its dataset's video features (--demos checks)
            cameras = self.cameras
        checks: list[tuple[str, Any, bool, str]] = [
            ("max_steps", self.max_steps, self.max_steps >= 1, "must be >= 1"),
            (
                "c_fail",
                self.c_fail,
                self.c_fail is None or 0 < self.c_fail < math.inf,
                "must be None (the expert's mean episode length) or a finite number > 0",
            ),
            (
                "cameras",
                self.cameras,
                all(c in cameras for c in self.cameras),
                f"must name the task's cameras: {', '.join(cameras)}",
            ),
            (
                "cameras",
                self.cameras,
                len(set(self.cameras)) == len(self.cameras) <= MAX_CAMERAS,
                f"must name at most {MAX_CAMERAS} distinct cameras",
            ),
            ("image_size", self.image_size, self.image_size >= 1, "must be >= 1"),
        ]
        for name, value, ok, allowed in checks:
            require(ok, f"{prefix}env.{name}", value, allowed)
        for row in BACKENDS.values():  # every section is checked: a config.json holds all
            row.validate(self, prefix)


LENT: dict[str, Any] = {}
"""What the layers above `aloe.envs` lend the rows, by name: `play_episode` (`aloe.rollout`)
and the operators the rows build (`aloe.operators.scripted`, `aloe.operators.composed`).
A row's C_fail is its operator's episode length on the rollout engine, and its operators
are built by the operators layer, both above this one: the rows name them here and the
lending modules fill the table when they are imported (`import aloe` imports them all)."""


def lent(name: str) -> Any:
    """`LENT[name]`; a RuntimeError naming what to import where its layer is not loaded."""
    try:
        return LENT[name]
    except KeyError:
        raise RuntimeError(
            f"{name!r} is lent by aloe.operators / aloe.rollout: import aloe"
        ) from None


def task_names(name: str, suites: Mapping[str, tuple[str, ...]]) -> list[str]:
    """The tasks a `--task` value names, unchecked: a suite, a comma-separated list, or one
    (`aloe.envs.tasks.task_list` checks them)."""
    if name in suites:
        return list(suites[name])
    return [t.strip() for t in name.split(",") if t.strip()]


class Dims(NamedTuple):
    state: int  # observation.state's width
    action: int


class PresetSizes(NamedTuple):
    """What a task changes in the training presets (`aloe.config.preset`)."""

    max_steps: int  # the policy's time limit and the operator's (all presets but smoke)
    exec_horizon: int | None  # the executed part of a chunk (every preset); None = unchanged
    camera: str  # the default view of --obs image
    patience: int  # the operator's watch, in steps
    stall_steps: int  # the stall detector, in steps
    eval_episodes: int | None  # the default preset's evaluation episodes; None = unchanged


class Variants(Protocol):
    """Unseen-object conditions of a backend's tasks (the suite's `variants` part)."""

    def of(self, task: str) -> list[Any]:
        """The task's conditions, nominal first; each has `name` and `description`."""
        ...

    def applied(self, env: Any, variant: Any) -> AbstractContextManager[Any]:
        """The variant applied to `env` for the block, undone on exit."""
        ...


@dataclass(frozen=True)
class SuiteParts:
    """Which parts of `aloe eval --suite full` apply to a backend's tasks."""

    variants: Variants | None = None  # unseen objects; None = not run
    perturbations: bool = False  # pushes and disturbances (`aloe.evaluation.perturb`)
    q_traces: bool = False  # Q along a stored episode and a rollout (`aloe.evaluation.qtrace`)
    restore: Literal["stored", "replay"] = "replay"
    """How OPE puts the world back at a stored step: "stored" from the store's simulator
    state (the env has `restore_stored`), "replay" by replaying the episode's actions."""


@dataclass(frozen=True)
class Backend:
    """One simulator: everything the rest of aloe asks of it. One row of `BACKENDS`."""

    name: str
    tasks: Mapping[str, str]  # task name -> its natural-language instruction
    make_env: Callable[[EnvConfig], EpisodeEnv]  # the env of a config's task (or task list)
    dims: Callable[[str, EnvConfig], Dims]
    """(task, the run's env config) -> its state and action widths: a simulator's follow from
    the task, the robot row's from the run's dataset (`env.robot`)."""
    cameras: tuple[str, ...] | None
    """The cameras of its scenes, the first the default view; None: any name (the robot
    row's, video features of the run's dataset, which `--demos` checks)."""
    operator_episode_length: Callable[[str], float]  # Eq. 14's default C_fail for a task
    make_operator: Callable[[str, Any, int], Any]
    """(task, `aloe.operators.scripted.OperatorConfig`, seed) -> an `Operator` of the
    config's profile (oracle, human, clumsy)."""
    suites: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # named task lists
    multi_task: bool = False  # its tasks may run together (a suite or a list)
    requires: str | None = None  # a Python module it needs (`importlib.util.find_spec`)
    install: str = ""  # how to install it, for the error where `requires` is missing
    presets: Callable[[str], PresetSizes | None] = lambda task: None
    validate: Callable[[EnvConfig, str], None] = lambda cfg, prefix: None  # its own settings
    suite: SuiteParts = SuiteParts()
    instruction: Callable[[str, EnvConfig], str] | None = None
    """(task, the run's env config) -> the instruction the policy is given; None: `tasks`'s
    (the robot row's is its dataset's)."""
    simulated: bool = True
    """False: no episode runs in-process (the robot row): they come from `aloe robot`
    through `aloe serve`, and `aloe train` neither collects nor evaluates."""


BACKENDS: dict[str, Backend] = {}
"""The table of simulators, one row per simulator module; `aloe.envs.registry` adds the rows."""


class Merged(Mapping[str, Any]):
    """One mapping of every row (its tasks, its suites), read from the table as it is now."""

    def __init__(self, part: Callable[[Backend], Mapping[str, Any]]) -> None:
        self._part = part

    def __getitem__(self, key: str) -> Any:
        for row in BACKENDS.values():
            if key in self._part(row):
                return self._part(row)[key]
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        for row in list(BACKENDS.values()):
            yield from self._part(row)

    def __len__(self) -> int:
        return sum(len(self._part(row)) for row in BACKENDS.values())


SUITES: Mapping[str, tuple[str, ...]] = Merged(lambda row: row.suites)


def backend_of(task: str) -> Backend:
    """The row of the simulator that runs `task` (a task, a suite or a list: its first
    task's); KeyError naming the task where no row has it."""
    names = task_names(task, SUITES)
    first = names[0] if names else task
    for row in BACKENDS.values():
        if first in row.tasks:
            return row
    raise KeyError(f"no simulator has the task {task!r}")

"""`BACKENDS`: the table of simulators, one row (`aloe.envs.base.Backend`) per simulator
module, and the lookups the rest of aloe asks a task's row through. Everything simulator-
specific outside `aloe.envs` goes through here: a task's environment, cameras, default
C_fail, operator, preset sizes and evaluation-suite parts, and whether it has a simulator
at all (the `robot` row has none: `aloe.envs.robot`).

A new simulator is one module that defines its row, plus its line below (docs/extending.md).
"""

from __future__ import annotations

from collections.abc import Iterable

from aloe.envs import metaworld, ogbench, robot
from aloe.envs.base import BACKENDS, SUITES, EnvConfig, EpisodeEnv, PresetSizes, backend_of

__all__ = [
    "BACKENDS",
    "SUITES",
    "backend_of",
    "make_env",
    "camera_names",
    "simulated",
    "operator_episode_length",
    "failure_cost",
    "preset_sizes",
]

BACKENDS.update(
    {
        "metaworld": metaworld.BACKEND,
        "ogbench": ogbench.BACKEND,
        "robot": robot.BACKEND,
    }
)


def make_env(cfg: EnvConfig) -> EpisodeEnv:
    """The environment (`aloe.envs.base.EpisodeEnv`) for an `EnvConfig`'s task."""
    return backend_of(cfg.task).make_env(cfg)


def camera_names(task: str) -> tuple[str, ...] | None:
    """The cameras a task's scene has (what `--vision.cameras` may name), the first the
    default view; None: any name (a robot run's, its dataset's video features)."""
    return backend_of(task).cameras


def simulated(task: str) -> bool:
    """Whether `task`'s episodes run in-process (a simulator's), or come from `aloe robot`
    through `aloe serve` (a robot run's: no collection or evaluation in `aloe train`)."""
    return backend_of(task).simulated


def operator_episode_length(task: str) -> float:
    """Mean length of the operator's noise-free episodes on `task`: Eq. 14's default C_fail."""
    return backend_of(task).operator_episode_length(task)


def failure_cost(cfg: EnvConfig, task: str) -> float:
    """Eq. 14's C_fail on `task`: the config's `c_fail`, else the operator's episode length."""
    return cfg.c_fail if cfg.c_fail is not None else operator_episode_length(task)


def largest_failure_cost(cfg: EnvConfig, tasks: Iterable[str]) -> float:
    """The largest C_fail over a run's tasks: what the HL-Gauss bins of its critic span."""
    return max(failure_cost(cfg, task) for task in tasks)


def preset_sizes(task: str | None) -> PresetSizes | None:
    """What `task` changes in the training presets; None for none (or an unknown task, which
    the config's validation reports)."""
    try:
        row = backend_of(task) if task else None
    except KeyError:
        return None
    return row.presets(task) if row is not None and task is not None else None

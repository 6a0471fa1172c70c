"""`BACKENDS`: the table of simulators, one row (`aloe.envs.base.Backend`) per simulator
module, and the lookups the rest of aloe asks a task's row through. Everything simulator-
specific outside `aloe.envs` goes through here: a task's environment, cameras, default
C_fail, operator, preset sizes and evaluation-suite parts.

A new simulator is one module that defines its row, plus its line below (docs/extending.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from aloe.envs import metaworld, ogbench
from aloe.envs.base import Backend, EnvConfig, EpisodeEnv, PresetSizes, task_names

BACKENDS: dict[str, Backend] = {
    "metaworld": metaworld.BACKEND,
    "ogbench": ogbench.BACKEND,
}


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


def make_env(cfg: EnvConfig) -> EpisodeEnv:
    """The environment (`aloe.envs.base.EpisodeEnv`) for an `EnvConfig`'s task."""
    return backend_of(cfg.task).make_env(cfg)


def camera_names(task: str) -> tuple[str, ...]:
    """The cameras a task's scene has (what `--vision.cameras` may name), the first the
    default view."""
    return backend_of(task).cameras


def operator_episode_length(task: str) -> float:
    """Mean length of the operator's noise-free episodes on `task`: Eq. 14's default C_fail."""
    return backend_of(task).operator_episode_length(task)


def failure_cost(cfg: EnvConfig, task: str) -> float:
    """Eq. 14's C_fail on `task`: the config's `c_fail`, else the operator's episode length."""
    return cfg.c_fail if cfg.c_fail is not None else operator_episode_length(task)


def preset_sizes(task: str | None) -> PresetSizes | None:
    """What `task` changes in the training presets; None for none (or an unknown task, which
    the config's validation reports)."""
    try:
        row = backend_of(task) if task else None
    except KeyError:
        return None
    return row.presets(task) if row is not None and task is not None else None

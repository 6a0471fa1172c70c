"""Task names: which tasks aloe runs, their instructions, and what a `--task` value names.

Every row of `aloe.envs.registry.BACKENDS` brings its tasks (name -> instruction) and its
named suites; a row whose simulator is not installed (`Backend.requires`) is listed only
where it is. `aloe tasks` prints `supported_tasks`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping

from aloe.envs.base import DEFAULT_TASK, Dims, EnvConfig, Merged, task_names
from aloe.envs.registry import BACKENDS, SUITES, backend_of

__all__ = [
    "DEFAULT_TASK",
    "INSTRUCTIONS",
    "SUITES",
    "check_task",
    "supported_tasks",
    "task_dims",
    "task_instruction",
    "task_list",
]

INSTRUCTIONS: Mapping[str, str] = Merged(lambda row: row.tasks)
"""Every task of every row -> its natural-language instruction."""


def _installed(requires: str | None) -> bool:
    return requires is None or importlib.util.find_spec(requires) is not None


def supported_tasks() -> list[str]:
    """The tasks this installation runs (those of the rows whose simulator is installed)."""
    rows = [row for row in BACKENDS.values() if _installed(row.requires)]
    return sorted(t for row in rows for t in row.tasks)


def uninstalled_tasks() -> dict[str, list[str]]:
    """The tasks whose simulator this installation lacks, by the row that brings them."""
    return {
        name: sorted(row.tasks) for name, row in BACKENDS.items() if not _installed(row.requires)
    }


def task_list(name: str) -> list[str]:
    """The tasks a `--task` value names: a suite (`mt10`), a comma-separated list, or one."""
    if name in SUITES:
        return list(SUITES[name])
    tasks = [check_task(t) for t in task_names(name, SUITES)]
    if not tasks or len(set(tasks)) != len(tasks):
        raise ValueError(
            f"task {name!r}: name one task, a suite ({', '.join(SUITES)}) or a "
            "comma-separated list of distinct tasks"
        )
    rows = {backend_of(t).name for t in tasks}
    if len(tasks) > 1 and (len(rows) > 1 or not backend_of(tasks[0]).multi_task):
        raise ValueError(
            f"task {name!r}: a list's tasks must share one simulator that runs several "
            f"tasks together ({', '.join(r for r, row in BACKENDS.items() if row.multi_task)})"
        )
    return tasks


def check_task(name: str) -> str:
    """Return `name` if aloe supports it (a task, or a suite / list of them, see
    `task_list`), else raise ValueError listing what is allowed."""
    if name in SUITES or ("," in name and task_list(name)):
        return name
    if name in INSTRUCTIONS:
        row = backend_of(name)
        if not _installed(row.requires):
            raise ValueError(f"task {name!r} needs {row.name}: {row.install}")
        return name
    close = [t for t in INSTRUCTIONS if name.split("-")[0] in t]
    hint = f" (did you mean {', '.join(close[:3])}?)" if close else ""
    raise ValueError(f"unknown task {name!r}{hint}; `aloe tasks` lists the supported tasks")


def task_dims(name: str, env: EnvConfig | None = None) -> Dims:
    """State and action widths of the tasks `name` names (all tasks of a list share them);
    `env`: the run's env config, where a robot run's widths are (`env.robot`)."""
    first = task_list(name)[0]
    return backend_of(first).dims(first, env or EnvConfig(task=name))


def task_instruction(task: str, env: EnvConfig | None = None) -> str:
    """The instruction a run's policy is given for `task`: the task's (`INSTRUCTIONS`), or a
    robot run's, its dataset's (in `env.robot`)."""
    row = backend_of(task)
    if row.instruction is None:
        return row.tasks[task]
    return row.instruction(task, env or EnvConfig(task=task))

"""Task name -> environment: the one place a task becomes a simulator (MetaWorld's `TaskEnv`
or `OGBenchEnv`, both `aloe.envs.base.EpisodeEnv`), and its default Eq. 14 C_fail."""

from __future__ import annotations

from typing import Any

from aloe.envs.tasks import backend, task_list


def make_env(cfg: Any) -> Any:
    """The environment (`aloe.envs.base.EpisodeEnv`) for an `EnvConfig`'s task."""
    if backend(task_list(cfg.task)[0]) == "ogbench":
        from aloe.envs.ogbench import OGBenchEnv

        return OGBenchEnv(cfg)
    from aloe.envs.metaworld import TaskEnv

    return TaskEnv(cfg)


def camera_names(task: str) -> tuple[str, ...]:
    """The cameras a task's scene has (what `--vision.cameras` may name), the first the
    default view."""
    if backend(task_list(task)[0]) == "ogbench":
        from aloe.envs.ogbench_tasks import CAMERAS as OGBENCH_CAMERAS

        return OGBENCH_CAMERAS
    from aloe.envs.metaworld import CAMERAS

    return CAMERAS


def operator_episode_length(task: str) -> float:
    """Mean length of the operator's noise-free episodes on `task`: Eq. 14's default C_fail."""
    if backend(task) == "ogbench":
        from aloe.envs.ogbench import operator_episode_length as ogbench_length

        return ogbench_length(task)
    from aloe.envs.metaworld import expert_episode_length

    return expert_episode_length(task)

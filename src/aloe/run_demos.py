"""A run's demonstrations from a dataset (`--demos`): what the run takes of it
(`demos_target`) and the check and choice of its episodes (`plan_demos`); a robot run's
sizes, read from it, are `aloe.run_robot`'s."""

from __future__ import annotations

from aloe.config import TrainConfig
from aloe.datasets.demos import Demos, DemosPlan, DemosTarget
from aloe.envs.base import EpisodeEnv
from aloe.envs.registry import make_env, simulated
from aloe.envs.tasks import task_instruction, task_list


def demos_target(cfg: TrainConfig, env: EpisodeEnv) -> DemosTarget:
    """What a run of `cfg` (resolved) on `env` takes of a `--demos` dataset; a robot run's
    actions are mapped into [-1, 1] by its units."""
    size = (cfg.env.image_size, cfg.env.image_size)
    robot = not simulated(cfg.task)
    return DemosTarget(
        task=cfg.task,
        tasks={task_instruction(t, cfg.env): t for t in task_list(cfg.task)},
        state_dim=env.state_dim,
        action_dim=env.action_dim,
        fps=1.0 / env.control_period,
        horizon=cfg.horizon,
        cameras={c: size for c in cfg.env.cameras},
        units=cfg.env.robot.units() if robot else None,
    )


def plan_demos(cfg: TrainConfig, env: EpisodeEnv | None = None) -> DemosPlan:
    """`cfg.demos` opened read-only and checked against the run (`Demos.plan`): UsageError
    in one line on a misfit. `env`: the run's environment, built here if not given."""
    assert cfg.demos is not None
    demos = Demos.open(cfg.demos, cfg.demos_map)
    return demos.plan(demos_target(cfg, env if env is not None else make_env(cfg.env)))

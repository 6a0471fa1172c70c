"""A run for a robot without a simulator (`--task robot`, the row `aloe.envs.robot`):
its sizes, read from its `--demos` dataset (`robot_run`), the check that a resumed one has
the robot's episodes to train on (`check_robot_episodes`), and its success per iteration
(`robot_success`). `aloe.train` trains it one iteration a call.

A robot run has no sizes of its own: its state and action widths, its frame rate (the
robot's control rate), its instruction (the most frequent task string of the episodes it
uses) and its action ranges (`aloe.envs.robot_spec.ActionUnits`: meta/stats.json's min and
max per action value, or the frames') are its dataset's, recorded in its config.json as
`env.robot` when it starts; its Eq. 14 C_fail, unless given, is the mean length of those
episodes (the paper's: the operator's mean episode length). With no simulator there is no
evaluation: its success at iteration k is of the robot's episodes of iteration k, played by
π_{k−1}: the share it finished on its own (success marked, no takeover).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from aloe import checkpoint
from aloe.algos.table import ALGORITHMS
from aloe.collect import CollectStats
from aloe.config import TrainConfig
from aloe.datasets.demos import Demos, DemosPlan, DemosTarget
from aloe.datasets.store import EpisodeStore
from aloe.envs.registry import simulated
from aloe.envs.robot_spec import RobotSpec
from aloe.errors import require


def robot_run(cfg: TrainConfig, demos: Demos) -> tuple[TrainConfig, DemosPlan]:
    """A robot run's config (resolved, `env.robot` empty) with its sizes read from `demos`
    (module docstring), and the plan of the episodes it imports; UsageError in one line
    where the dataset does not fit (an aloe store, whose actions are in aloe's units; no
    episode as long as the chunk; a camera it lacks)."""
    require(
        not demos.dataset.is_aloe_store,
        "--demos",
        demos.path,
        f"is an aloe store, whose actions are aloe's, not a robot's: --task {cfg.task} "
        "takes a LeRobot dataset recorded on the robot",
    )
    units, _ = demos.action_units()
    state_dim = demos.state.shape[1]
    action_dim = demos.action.shape[1]
    size = (cfg.env.image_size, cfg.env.image_size)
    target = DemosTarget(
        task=cfg.task,
        tasks={"": cfg.task},  # one task: every episode is its, whatever its instruction
        state_dim=state_dim,
        action_dim=action_dim,
        fps=demos.dataset.fps,
        horizon=cfg.horizon,
        cameras={c: size for c in cfg.env.cameras},
        units=units,
    )
    plan = demos.plan(target)
    spec = RobotSpec(
        state_dim=state_dim,
        action_dim=action_dim,
        fps=demos.dataset.fps,
        instruction=plan.instruction,
        action_low=tuple(units.low.tolist()),
        action_high=tuple(units.high.tolist()),
    )
    c_fail = cfg.env.c_fail or float(np.mean(demos.dataset.lengths[plan.use]))
    env = dataclasses.replace(cfg.env, robot=spec, c_fail=c_fail)
    return dataclasses.replace(cfg, env=env), plan


def with_robot(cfg: TrainConfig) -> TrainConfig:
    """`cfg` (resolved), with a robot run's sizes read from its dataset (`robot_run`) where
    they are not yet; any other run's as it is."""
    if simulated(cfg.task) or not cfg.env.robot.empty:
        return cfg
    assert cfg.demos is not None  # `TrainConfig.validate` asks a robot run for it
    return robot_run(cfg, Demos.open(cfg.demos, cfg.demos_map))[0]


def check_robot_episodes(cfg: TrainConfig) -> None:
    """Refuse to resume a robot run whose store holds no episode of the iteration it would
    train (the robot sends them through `aloe serve`); a warm start still to finish, or a
    finished run, needs none."""
    last = checkpoint.latest(cfg.out / "checkpoints")
    k = 0 if last is None else last[0] + 1
    if k == 0 or k > (cfg.iterations if ALGORITHMS[cfg.algo].iterates else 0):
        return
    held = EpisodeStore.open(cfg.out / "dataset").summary()["episodes_per_iteration"]
    require(
        held.get(k, 0) > 0,
        "--resume",
        cfg.out,
        f"its store holds no robot episode of iteration {k} yet: collect them with "
        f"`aloe robot` through `aloe serve --run {cfg.out}` first",
    )


def robot_success(k: int, stats: CollectStats) -> dict[str, Any]:
    """A robot run's success columns of iteration k (no evaluation): of its robot episodes,
    played by the previous iteration's policy, the share it finished on its own (success
    marked, no takeover); null at iteration 0, whose episodes are demonstrations."""
    rate = stats.autonomous_successes / stats.episodes if k and stats.episodes else math.nan
    return {
        "success_rate": rate,
        "mean_steps_to_success": math.nan,
        "eval_episodes": 0,
        "success_source": "robot",
    }

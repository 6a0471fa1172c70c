"""The `robot` row: a run for a robot without a simulator (`aloe train --task robot --demos
PATH`, docs/real-robot.md).

A robot run's sizes are its dataset's: the state and action widths, the frame rate (the
robot's control rate), the instruction and the action ranges are read from the `--demos`
dataset when the run starts (`aloe.run_robot.robot_run`) and kept in its config.json as
`env.robot` (`aloe.envs.robot_spec.RobotSpec`, with the action units' map). Its episodes
come from `aloe robot` through `aloe serve`: nothing collects or evaluates in-process, so
`make_env` gives a `RobotEnv` that carries the sizes and refuses to play, and the row has
no scripted operator.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from aloe.envs.base import Backend, Dims, EnvConfig, Info, Obs
from aloe.envs.robot_spec import TASK, RobotSpec
from aloe.errors import UsageError

INSTRUCTION = "(a robot without a simulator: its instruction and sizes are its --demos dataset's)"
NO_SIMULATOR = (
    "a robot run has no simulator: its episodes come from `aloe robot` through `aloe serve`"
)


def _spec(cfg: EnvConfig) -> RobotSpec:
    """The run's spec; a UsageError where the run has none yet."""
    if cfg.robot.empty:
        raise UsageError(
            f"--task {TASK}: its sizes come from the run's --demos dataset (give --demos PATH)"
        )
    return cfg.robot


class RobotEnv:
    """A robot run's environment in aloe's process: the robot's sizes and rate, no episodes
    (any attempt to play one is a UsageError in one line)."""

    sim_state_dim = 0

    def __init__(self, cfg: EnvConfig) -> None:
        spec = _spec(cfg)
        self.task = TASK
        self.instruction = spec.instruction
        self.steps = 0
        self.max_steps = cfg.max_steps
        self.limit = cfg.max_steps
        self.state_dim = spec.state_dim
        self.action_dim = spec.action_dim
        self.control_period = 1.0 / spec.fps

    def reset(self, *, seed: int) -> tuple[Obs, Info]:
        raise UsageError(NO_SIMULATOR)

    def step(self, action: np.ndarray) -> tuple[Obs, float, bool, bool, Info]:
        raise UsageError(NO_SIMULATOR)

    def reward(self, *, success: bool, failed: bool) -> float:
        raise UsageError(NO_SIMULATOR)

    def reset_progress(self) -> None:
        pass

    def hand_to(self, actor: str) -> None:
        pass

    def snapshot(self) -> dict[str, Any]:
        raise UsageError(NO_SIMULATOR)

    def restore(self, snap: dict[str, Any]) -> Obs:
        raise UsageError(NO_SIMULATOR)

    def sim_state(self) -> np.ndarray:
        return np.zeros(0)

    def close(self) -> None:
        pass


def _no_operator(task: str, cfg: Any, seed: int) -> Any:
    raise UsageError(f"{NO_SIMULATOR}; the operator is the person at the robot")


def _no_expert(task: str) -> float:
    raise UsageError(
        f"--task {TASK}: no scripted expert; C_fail defaults to the dataset's mean "
        "episode length (env.c_fail)"
    )


BACKEND = Backend(
    name="robot",
    tasks={TASK: INSTRUCTION},
    make_env=RobotEnv,
    dims=lambda task, cfg: Dims(_spec(cfg).state_dim, _spec(cfg).action_dim),
    cameras=None,  # the run names them: video features of its dataset
    operator_episode_length=_no_expert,
    make_operator=_no_operator,
    instruction=lambda task, cfg: _spec(cfg).instruction,
    validate=lambda cfg, prefix: cfg.robot.validate(cfg.task, prefix),
    simulated=False,
)

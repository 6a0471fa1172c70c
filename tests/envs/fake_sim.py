"""A third simulator in one module: a point on a line that must reach its goal.

It proves that a simulator is one module plus one row of `aloe.envs.registry.BACKENDS`
(docs/extending.md walks through it): `register` adds the row, and `aloe collect`,
`aloe train` and `aloe eval` then run its task with nothing else in `src/` changed.

The world: x in [-1, 1], a goal g drawn from the reset seed; an action in [-1, 1] moves the
point by `SPEED * action`. The episode succeeds within `TOLERANCE` of the goal and fails
irrecoverably when the point leaves [-1, 1] (the operator then rewinds). The scripted oracle
heads for the goal, with the profile's noise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from aloe.envs.base import Backend, Dims, EnvConfig, SuiteParts

TASK = "point-reach"
INSTRUCTION = "move the point to the goal"
SPEED = 0.1  # distance per step at full action
TOLERANCE = 0.05  # success within this distance of the goal
FELL_OFF = "object fell off the table"  # an irrecoverable failure: the operator rewinds


class PointEnv:
    """`aloe.envs.base.EpisodeEnv` of the point: state [x, goal], action [velocity]."""

    state_dim = 2
    action_dim = 1
    sim_state_dim = 3  # x, goal, steps
    control_period = 0.1

    def __init__(self, cfg: EnvConfig) -> None:
        self.cfg = cfg
        self.task = TASK
        self.instruction = INSTRUCTION
        self.c_fail = cfg.c_fail if cfg.c_fail is not None else operator_episode_length(TASK)
        self.x = 0.0
        self.goal = 0.0
        self.steps = 0
        self.limit = cfg.max_steps
        self.best = -np.inf  # the stall detector's best progress and steps since
        self.idle = 0

    @property
    def max_steps(self) -> int:
        return self.cfg.max_steps

    def reset(self, *, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
        rng = np.random.default_rng(seed)
        self.x = float(rng.uniform(-0.5, 0.5))
        self.goal = float(rng.uniform(-0.8, 0.8))
        self.steps = 0
        self.limit = self.cfg.max_steps
        self.reset_progress()
        return self._obs(), {"success": False, "failure_reason": ""}

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], float, bool, bool, dict]:
        self.x += SPEED * float(np.clip(np.asarray(action, dtype=np.float64)[0], -1.0, 1.0))
        self.steps += 1
        success = abs(self.x - self.goal) < TOLERANCE
        reason = "" if success else self._failure()
        if not success and not reason and self.steps >= self.limit:
            reason = "timeout" if self.cfg.timeout_is_failure else ""
        truncated = not success and not reason and self.steps >= self.limit
        info = {"success": success, "failure_reason": reason, "progress": self.progress()}
        reward = self.reward(success=success, failed=bool(reason))
        return self._obs(), reward, success or bool(reason), truncated, info

    def progress(self) -> float:
        return -abs(self.x - self.goal)

    def _failure(self) -> str:
        if abs(self.x) > 1.0:
            return FELL_OFF
        stall = self.cfg.failures.stall_steps
        if self.progress() > self.best + 1e-3:
            self.best = self.progress()
            self.idle = 0
        else:
            self.idle += 1
        return f"stall: no task progress for {stall} steps" if stall and self.idle >= stall else ""

    def reward(self, *, success: bool, failed: bool) -> float:
        if success:
            return 0.0
        return -float(self.c_fail) if failed else -1.0

    def reset_progress(self) -> None:
        self.best = -np.inf
        self.idle = 0

    def hand_to(self, actor: str) -> None:
        pass

    def snapshot(self) -> dict[str, Any]:
        return {"x": self.x, "goal": self.goal, "steps": self.steps, "best": self.best}

    def restore(self, snap: dict[str, Any]) -> dict[str, Any]:
        self.x = snap["x"]
        self.goal = snap["goal"]
        self.steps = snap["steps"]
        self.best = snap["best"]
        return self._obs()

    def sim_state(self) -> np.ndarray:
        return np.array([self.x, self.goal, self.steps], dtype=np.float64)

    def close(self) -> None:
        pass

    def _obs(self) -> dict[str, Any]:
        state = np.array([self.x, self.goal], dtype=np.float32)
        return {"state": state, "instruction": self.instruction}


class PointOracle:
    """`aloe.operators.base.Operator` of the point: heads for the goal, with noise; takes
    over when the policy makes no progress for `patience` steps."""

    def __init__(self, cfg: Any, seed: int = 0) -> None:
        self.cfg = cfg
        self.reset(seed)

    def reset(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.start_watching()

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        x, goal = (float(v) for v in obs["state"])
        action = np.clip((goal - x) / SPEED, -1.0, 1.0)
        noisy = action + self.cfg.noise_std * self.rng.standard_normal()
        return np.clip(np.array([noisy]), -1.0, 1.0).astype(np.float32)

    def start_watching(self) -> None:
        self.best = -np.inf
        self.idle = 0

    def watch(self, obs: dict[str, Any], info: dict[str, Any]) -> str | None:
        if info["progress"] > self.best + 1e-3:
            self.best = info["progress"]
            self.idle = 0
        else:
            self.idle += 1
        if self.cfg.patience and self.idle >= self.cfg.patience:
            return f"imminent failure: no progress for {self.cfg.patience} steps"
        return None

    def take_over(self, reason: str, history: list[dict[str, Any]]) -> int:
        return max(0, len(history) - 1 - (5 if reason == FELL_OFF else 0))


def operator_episode_length(task: str) -> float:
    """Eq. 14's default C_fail: the noise-free oracle's mean episode length, measured by
    the rollout engine with no policy."""
    from aloe.operators.scripted import OperatorConfig
    from aloe.rollout import play_episode

    env = PointEnv(EnvConfig(task=task, max_steps=100, c_fail=1.0))
    oracle = PointOracle(OperatorConfig(noise_std=0.0))
    runs = [play_episode(env, seed, policy=None, operator=oracle) for seed in range(10)]
    return float(np.mean([run.steps for run in runs if run.success]))


BACKEND = Backend(
    name="point",
    tasks={TASK: INSTRUCTION},
    make_env=PointEnv,
    dims=lambda task, cfg: Dims(PointEnv.state_dim, PointEnv.action_dim),
    cameras=(),
    operator_episode_length=operator_episode_length,
    make_operator=lambda task, cfg, seed: PointOracle(cfg, seed),
    suite=SuiteParts(restore="replay"),
)


def register(monkeypatch: Any) -> None:
    """Add the point's row to `BACKENDS` for one test (undone after it)."""
    from aloe.envs.registry import BACKENDS

    monkeypatch.setitem(BACKENDS, BACKEND.name, BACKEND)

"""The operator of the OGBench tasks: OGBench's per-subtask oracles chained by a planner.

OGBench's oracles (`ogbench.manipspace.oracles.markov`) each solve one subtask (a cube to a
place, a button pressed, the drawer or window slid) and read the subtask's target from the
info dict that OGBench writes only while collecting its datasets. The planner reads the
goal off the scene (`observation["privileged"]`, `aloe.envs.ogbench`), picks the next unmet
part in an order that respects the task's dependencies, and hands that oracle the target:

- cubes: the first cube away from its goal;
- scene: a locked drawer or window is unlocked (its button pressed) before it is slid, and
  the buttons are set to their goal states only once everything else is in place;
- puzzle (lights out: a press toggles the button and its four neighbours): the presses
  that reach the goal pattern, solved over GF(2), the first of them next.

A subtask runs until its oracle says done (it then lets go and moves the hand away), after
which the planner looks again. `ComposedOperator` is the `oracle` profile (noise, delay,
watching, retreat and rewinding by `ScriptedOperator`'s rules); `OGBenchHuman` is the `human`
profile: `HumanOperator` carrying out the noise-free composed plan.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from types import SimpleNamespace
from typing import Any

import numpy as np

from aloe.envs.base import LENT
from aloe.envs.ogbench_tasks import CONTROL_HZ, lights_out
from aloe.operators.human import CONTROL_HZ as HUMAN_HZ
from aloe.operators.human import HumanConfig, HumanOperator
from aloe.operators.scripted import PERSONS, OperatorConfig, StallWatch, restart_index

RETREAT = (0.0, 0.0, 0.2, 0.0, -1.0)  # open the gripper and lift the hand ~1 cm a step
# The arm's sampling bounds of OGBench's scenes: where an oracle parks the hand when done.
_PARK = np.array([[0.3, -0.15, 0.22], [0.5, 0.15, 0.3]])


class ComposedOperator:
    """Implements `aloe.operators.base.Operator` for an OGBench task."""

    def __init__(self, task: str, cfg: OperatorConfig, seed: int = 0) -> None:
        # optional extra: ogbench
        from ogbench.manipspace.oracles.markov.button_markov import ButtonMarkovOracle
        from ogbench.manipspace.oracles.markov.cube_markov import CubeMarkovOracle
        from ogbench.manipspace.oracles.markov.drawer_markov import DrawerMarkovOracle
        from ogbench.manipspace.oracles.markov.window_markov import WindowMarkovOracle

        self.task = task
        self.cfg = cfg
        self.retreat, self.stall = 0, StallWatch(cfg)
        env = SimpleNamespace(unwrapped=SimpleNamespace(_arm_sampling_bounds=_PARK))
        self.oracles: dict[str, Any] = {
            "cube": CubeMarkovOracle(env=env),
            "button": ButtonMarkovOracle(env=env),
            "drawer": DrawerMarkovOracle(env=env),
            "window": WindowMarkovOracle(env=env),
        }
        self.reset(seed)

    def reset(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.seen: deque[dict[str, Any]] = deque(maxlen=self.cfg.delay_steps + 1)
        self.subtask: tuple[str, dict[str, Any]] | None = None
        self.start_watching()

    # Watching, the takeover's retreat and rewinding: `ScriptedOperator`'s rules.

    def start_watching(self) -> None:
        self.retreat = 0
        self.stall.start()

    def watch(self, obs: dict[str, Any], info: dict[str, Any]) -> str | None:
        return self.stall.watch(info)

    def take_over(self, reason: str, history: list[dict[str, Any]]) -> int:
        self.subtask = None  # the scene is put back: plan afresh after the retreat
        self.retreat = self.cfg.retreat_steps
        return restart_index(self.cfg, reason, history)

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        self.seen.append(obs["privileged"])
        if self.retreat > 0:
            self.retreat -= 1
            action = np.array(RETREAT)
        else:
            action = self.plan_action(self.seen[0])
        action = action + self.cfg.noise_std * self.rng.standard_normal(action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def plan_action(self, info: dict[str, Any]) -> np.ndarray:
        """The current subtask's oracle action; a new subtask when the last one is done."""
        if self.subtask is None or self.oracles[self.subtask[0]].done:
            self.subtask = next_subtask(info)
            if self.subtask is None:
                return np.zeros(5)  # everything in place: hold still
            oracle = self.oracles[self.subtask[0]]
            oracle.reset(None, None)
            oracle._final_pos = self.rng.uniform(*_PARK)  # seeded, not numpy's global state
            oracle._final_yaw = self.rng.uniform(-np.pi, np.pi)
        kind, target = self.subtask
        return np.asarray(self.oracles[kind].select_action(None, {**info, **target}), float)


def next_subtask(info: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The next part of the goal to work on, as (oracle, its target info), or None: what the
    scene holds (a lights-out board, cubes, the drawer and window) says which parts exist."""
    if "board" in info:
        return _next_press(info)
    for i in range(_count(info, "goal/block_{}_pos")):
        goal = info[f"goal/block_{i}_pos"]
        if np.linalg.norm(info[f"privileged/block_{i}_pos"] - goal) > 0.04:
            return "cube", {
                "privileged/target_block": i,
                "privileged/target_block_pos": goal.copy(),
                "privileged/target_block_yaw": np.zeros(1),
            }
    if "goal/drawer_pos" in info:
        return _next_scene_stage(info)
    return None


def _next_scene_stage(info: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    states = info["button_states"]
    goal = info["goal/button_states"]
    for part, button in (("drawer", 0), ("window", 1)):
        if abs(float(info[f"privileged/{part}_pos"][0]) - info[f"goal/{part}_pos"]) > 0.04:
            if states[button] == 0:  # locked
                return _press(info, button)
            return part, {
                f"privileged/target_{part}_pos": np.array([info[f"goal/{part}_pos"]]),
                f"privileged/target_{part}_handle_pos": info[f"goal/{part}_handle_pos"].copy(),
            }
    for button, (now, want) in enumerate(zip(states, goal, strict=True)):
        if now != want:
            return _press(info, button)
    return None


def _next_press(info: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    presses = lights_out(info["button_states"], info["goal/button_states"], *info["board"])
    todo = np.flatnonzero(presses)
    return _press(info, int(todo[0])) if todo.size else None


def _press(info: dict[str, Any], button: int) -> tuple[str, dict[str, Any]]:
    state = int(info["button_states"][button])
    return "button", {
        "privileged/target_button": button,
        "privileged/target_button_state": (state + 1) % 2,
        "privileged/target_button_top_pos": info["button_top_pos"][button].copy(),
    }


def _count(info: dict[str, Any], key: str) -> int:
    n = 0
    while key.format(n) in info:
        n += 1
    return n


class _FourDof:
    """The composed plan as the human profile's plan: MetaWorld's action layout (hand xyz,
    gripper); the yaw the plan wanted is kept for `OGBenchHuman` to put back."""

    def __init__(self, plan: ComposedOperator) -> None:
        self.plan = plan
        self.yaw = 0.0

    @property
    def retreat(self) -> int:
        return self.plan.retreat

    @retreat.setter
    def retreat(self, steps: int) -> None:
        self.plan.retreat = steps

    def reset(self, seed: int) -> None:
        self.plan.reset(seed)

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        action = self.plan.act(obs)
        self.yaw = float(action[3])
        return action[[0, 1, 2, 4]]

    def start_watching(self) -> None:
        self.plan.start_watching()

    def watch(self, obs: dict[str, Any], info: dict[str, Any]) -> str | None:
        return self.plan.watch(obs, info)

    def take_over(self, reason: str, history: list[dict[str, Any]]) -> int:
        return self.plan.take_over(reason, history)


class OGBenchHuman(HumanOperator):
    """The `human` profile on an OGBench task: the simulated person of `HumanOperator`
    (reaction, lag, drift, tremor, mistakes, retries, skill) carrying out the composed plan.
    What the person sees of the scene (`privileged`) is lagged and misjudged as the state is:
    the hand taken to be `offset` from where it is while the gripper is open, the goal
    misjudged by as much while it is closed."""

    plan: _FourDof

    def __init__(self, task: str, cfg: OperatorConfig, seed: int = 0) -> None:
        plan = ComposedOperator(task, dataclasses.replace(cfg, noise_std=0.0, delay_steps=0))
        human = at_control_rate(cfg.person())
        self.infos: deque[dict[str, Any]] = deque(maxlen=human.lag_steps + 1)
        super().__init__(_FourDof(plan), human, seed)

    def reset(self, seed: int) -> None:
        super().reset(seed)
        self.infos = deque(maxlen=self.cfg.lag_steps + 1)

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        self.infos.append(obs["privileged"])
        self.plan.yaw = 0.0  # held still or backing off: no turn
        action = super().act({**obs, "privileged": self._perceived_info()})
        return np.insert(action, 3, np.clip(self.plan.yaw, -1.0, 1.0)).astype(np.float32)

    def _perceived_info(self) -> dict[str, Any]:
        info = dict(self.infos[0])
        offset = self.mistake.offset
        if self.closed:
            for key in [k for k in info if k.startswith("goal/") and k.endswith("pos")]:
                if np.ndim(info[key]) == 1 and np.shape(info[key])[0] == 3:
                    info[key] = info[key] + offset
        else:
            info["proprio/effector_pos"] = info["proprio/effector_pos"] - offset
        return info


def at_control_rate(cfg: HumanConfig) -> HumanConfig:
    """`HumanConfig`'s step counts are MetaWorld's (80 Hz): the same times at OGBench's 20 Hz
    (a quarter of the steps; the tremor, defined per step, is left as it is)."""
    scale = CONTROL_HZ / HUMAN_HZ
    steps = ("reaction_steps", "lag_steps", "retry_steps", "back_off_steps", "notice_steps")
    new: dict[str, Any] = {
        k: max(1 if k != "lag_steps" else 0, round(getattr(cfg, k) * scale)) for k in steps
    }
    return dataclasses.replace(cfg, drift_tau_steps=cfg.drift_tau_steps * scale, **new)


def make_composed(task: str, cfg: OperatorConfig, seed: int = 0) -> Any:
    """The operator `cfg.profile` names for an OGBench task."""
    if cfg.profile in PERSONS:
        return OGBenchHuman(task, cfg, seed)
    return ComposedOperator(task, cfg, seed)


# what the OGBench row builds and measures C_fail with (aloe.envs.base.LENT)
LENT.update(ComposedOperator=ComposedOperator, make_composed=make_composed)

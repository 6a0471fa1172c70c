"""The simulated operator of MetaWorld's tasks: its scripted expert with noise and a reaction
delay (`ScriptedOperator`), the same expert carried out by a simulated person
(`HumanOperator`), and the noise-free expert that measures an episode (`ExpertOperator`)."""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aloe.envs.base import LENT
from aloe.envs.tasks import INSTRUCTIONS, task_list
from aloe.errors import require
from aloe.operators.base import Operator
from aloe.operators.human import HumanConfig, HumanOperator, clumsy

IRRECOVERABLE = ("object fell off the table", "object left the workspace", "object dropped")
PROFILES = ("oracle", "human", "clumsy")  # built by aloe.operators.profiles.make_operator
PERSONS = ("human", "clumsy")  # the profiles of a simulated person (`HumanOperator`)


@dataclass
class OperatorConfig:
    """How the simulated human behaves."""

    profile: str = "human"
    """oracle: the scripted expert with i.i.d. noise (`noise_std`, `delay_steps`), every
    correction an expert label | human: a simulated VR teleoperator (`human.*`) on the
    same expert: reaction time, lag, drifting and trembling hands, mistakes, varying skill
    | clumsy: that person three times as error-prone and as shaky (`human.clumsy`), whose
    corrections succeed about half of the time. The watching and takeover rules below
    apply to all."""
    noise_std: float = 0.1
    """Std of Gaussian noise added to the expert's actions (actions live in [-1, 1]); oracle."""
    delay_steps: int = 0
    """Reaction delay: the operator acts on the observation this many steps old; oracle."""
    patience: int = 60
    """Take over when the policy makes no task progress for this many steps (imminent
    failure); 0 = only take over on a detected failure or a time-out."""
    min_gain: float = 0.05
    """Progress (MetaWorld's dense reward) must beat its best by this much to count."""
    retreat_steps: int = 10
    """After a takeover, first open the gripper and lift the hand for this many steps (about
    1 cm each), as a person backs off before retrying; the scripted experts assume an open
    gripper above the object and stall from the closed-gripper states a policy leaves."""
    rewind_steps: int = 20
    """After an irrecoverable failure, restart this many steps before it (the last safe
    state); other failures restart from the failure state itself."""
    human: HumanConfig = field(default_factory=HumanConfig)
    """The simulated person of the human profile (and, made clumsy, of the clumsy one)."""

    def person(self) -> HumanConfig:
        """The simulated person of a `PERSONS` profile: `human`, made clumsy for `clumsy`."""
        return clumsy(self.human) if self.profile == "clumsy" else self.human

    def validate(self, prefix: str = "") -> None:
        """Raise UsageError naming the first field out of range, `operator.patience (-5):
        must be >= 0`; `prefix` leads the name ("config field " for a run's config)."""
        checks: list[tuple[str, bool, str]] = [
            ("profile", self.profile in PROFILES, f"must be one of {', '.join(PROFILES)}"),
            (
                "noise_std",
                math.isfinite(self.noise_std) and self.noise_std >= 0,
                "must be a finite number >= 0",
            ),
            ("delay_steps", self.delay_steps >= 0, "must be >= 0"),
            ("patience", self.patience >= 0, "must be >= 0 (0 = only on failure)"),
            (
                "min_gain",
                math.isfinite(self.min_gain) and self.min_gain >= 0,
                "must be a finite number >= 0",
            ),
            ("retreat_steps", self.retreat_steps >= 0, "must be >= 0"),
            ("rewind_steps", self.rewind_steps >= 0, "must be >= 0"),
        ]
        for name, ok, allowed in checks:
            require(ok, f"{prefix}operator.{name}", getattr(self, name), allowed)
        self.human.validate(prefix)


class StallWatch:
    """The operator's watch for imminent failure: an alarm after `cfg.patience` steps in which
    task progress (info["progress"]) never beat its best by `cfg.min_gain`. Every operator
    (scripted, composed, human) watches by these rules."""

    def __init__(self, cfg: OperatorConfig) -> None:
        self.cfg = cfg
        self.start()

    def start(self) -> None:
        self.best = -np.inf
        self.idle = 0

    def watch(self, info: dict[str, Any]) -> str | None:
        progress = float(info.get("progress", 0.0))
        if progress > self.best + self.cfg.min_gain:
            self.best = progress
            self.idle = 0
        else:
            self.idle += 1
        if self.cfg.patience and self.idle >= self.cfg.patience:
            return f"imminent failure: no progress for {self.cfg.patience} steps"
        return None


def restart_index(cfg: OperatorConfig, reason: str, history: list[dict[str, Any]]) -> int:
    """Where a takeover starts in the policy's recent snapshots: `cfg.rewind_steps` before an
    irrecoverable failure (the last safe state), the failure state itself otherwise."""
    if reason.startswith(IRRECOVERABLE):
        return max(0, len(history) - 1 - cfg.rewind_steps)
    return len(history) - 1


def expert_policy(task: str) -> Any:
    from metaworld.policies import ENV_POLICY_MAP  # late: slow to import, MetaWorld tasks only

    policy_cls: Any = ENV_POLICY_MAP[task]  # typed as the abstract base
    return policy_cls()


class ScriptedOperator:
    """Implements `aloe.operators.base.Operator` with the task's scripted expert.

    `task` may name several tasks (a suite such as mt10): the expert is chosen per
    observation by its instruction, as a person reads the task off the screen.
    """

    def __init__(self, task: str, cfg: OperatorConfig, seed: int = 0) -> None:
        self.cfg = cfg
        self.experts = {INSTRUCTIONS[t]: expert_policy(t) for t in task_list(task)}
        self.stall = StallWatch(cfg)
        self.reset(seed)

    def reset(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.seen: deque[np.ndarray] = deque(maxlen=self.cfg.delay_steps + 1)
        self.start_watching()

    def start_watching(self) -> None:
        self.retreat = 0
        self.stall.start()

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        self.seen.append(np.asarray(obs["state"], dtype=np.float64))
        if self.retreat > 0:
            self.retreat -= 1
            action = np.array([0.0, 0.0, 1.0, -1.0])
        else:
            expert = self.experts[obs["instruction"]]
            action = np.asarray(expert.get_action(self.seen[0]), dtype=np.float64)
        action = action + self.cfg.noise_std * self.rng.standard_normal(action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def watch(self, obs: dict[str, Any], info: dict[str, Any]) -> str | None:
        return self.stall.watch(info)

    def take_over(self, reason: str, history: list[dict[str, Any]]) -> int:
        self.retreat = self.cfg.retreat_steps
        return restart_index(self.cfg, reason, history)


class ExpertOperator:
    """Implements `aloe.operators.base.Operator` with the noise-free scripted expert on the
    simulator's full-precision state (`obs["privileged"]["state"]`), its actions as the
    expert gives them: what Eq. 14's default C_fail measures (`aloe.envs.metaworld`). It acts
    from the start and never takes over."""

    def __init__(self, task: str) -> None:
        self.experts = {INSTRUCTIONS[t]: expert_policy(t) for t in task_list(task)}

    def reset(self, seed: int) -> None:
        pass

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        expert = self.experts[obs["instruction"]]
        return np.asarray(expert.get_action(obs["privileged"]["state"]), dtype=np.float64)

    def start_watching(self) -> None:
        pass

    def watch(self, obs: dict[str, Any], info: dict[str, Any]) -> str | None:
        return None

    def take_over(self, reason: str, history: list[dict[str, Any]]) -> int:
        return len(history) - 1


def make_scripted(task: str, cfg: OperatorConfig, seed: int = 0) -> Operator:
    """The operator `cfg.profile` names for a MetaWorld task (a task, a suite or a list):
    `oracle`, the noisy scripted expert; `human` and `clumsy`, a simulated person carrying
    out the noise-free expert."""
    if cfg.profile in PERSONS:
        plan = ScriptedOperator(task, dataclasses.replace(cfg, noise_std=0.0, delay_steps=0), seed)
        return HumanOperator(plan, cfg.person(), seed)
    return ScriptedOperator(task, cfg, seed)


# what the MetaWorld row builds and measures C_fail with (aloe.envs.base.LENT)
LENT.update(
    ExpertOperator=ExpertOperator, OperatorConfig=OperatorConfig, make_scripted=make_scripted
)

"""A LeRobot robot as aloe's episode environment, and a LeRobot teleoperator as the person.

`LeRobotEnv` is an `aloe.envs.base.EpisodeEnv` over a LeRobot `Robot` (lerobot 0.4.4's
`lerobot.robots.Robot`, or anything with its members; nothing here imports lerobot):

- the observation's `state` is the robot's scalar observation features in their order, which
  is LeRobot's `observation.state` (an SO-101's six `<motor>.pos`); its `images` are the
  cameras the served run reads, resized to the run's image size;
- an action is one value in [-1, 1] per scalar action feature, mapped to the robot's units
  by `units` (`aloe.envs.robot_spec.ActionUnits`: the served run's `action_units`, from
  its dataset; None: the robot's units are aloe's) and sent with `send_action`;
- the control rate is kept on deadlines (`aloe.robot.pacing.Deadlines`): the observation
  after an action is read a control period after the last one;
- the outcome is the person's: `marks` is polled once per step (`Marks`: takeover, success,
  failure, re-record). Success and failure end the episode (a failure while the policy acts
  cuts its fragment, and the person corrects, as after a takeover); re-record raises
  `aloe.robot.teleop.Rerecord`, which drops the episode on the server; the takeover goes
  to the teleop through the step's `info["takeover"]`. At the time limit the episode is a
  `timeout` failure (or a truncation), as in simulation.

A real scene is not restored: `snapshot` keeps nothing, `restore` reads the robot where it
stands. The rewards are Eq. 14's, for the rollout's relabels only: the server computes the
stored ones from the outcomes with the run's C_fail.

`LeRobotTeleop` is the person: `watch` reports the takeover mark, `act` reads the leader
arm's `get_action` in the robot's action features, mapped into [-1, 1] by the same units
(clipped: the follower stays within the demonstrations' range). `marks_of_teleop` reads
LeRobot's own events (`get_teleop_events`: a gamepad's or keyboard's intervention, success,
failure and re-record buttons), `key_marks` the terminal's keys, for a leader arm that has
no buttons:

    space   take over        s   success        f   failure        r   re-record
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from aloe.config import TrainConfig
from aloe.envs.base import Info, Obs
from aloe.envs.robot_spec import ActionUnits
from aloe.errors import UsageError
from aloe.robot.pacing import Deadlines
from aloe.robot.teleop import Rerecord, terminal_keys


class Marks(NamedTuple):
    """What the person signalled since the last control step."""

    takeover: bool = False  # take control from the policy (a pedal or button held, space)
    success: bool = False  # the task is done
    failure: bool = False  # the task failed
    rerecord: bool = False  # drop this episode and play its seed again


def either(*marks: Marks) -> Marks:
    """The marks of several sources together (a gamepad's and the terminal's)."""
    return Marks(*(any(column) for column in zip(*marks, strict=True)))


def marks_of_teleop(teleop: Any) -> Callable[[], Marks]:
    """LeRobot's `get_teleop_events()` as marks: its keys are `TeleopEvents` members (or
    their string values: is_intervention, success, failure, terminate_episode,
    rerecord_episode); a termination without success or re-record is a failure."""

    def poll() -> Marks:
        events = {getattr(k, "value", k): bool(v) for k, v in teleop.get_teleop_events().items()}
        success = events.get("success", False)
        rerecord = events.get("rerecord_episode", False)
        ended = events.get("terminate_episode", False)
        return Marks(
            takeover=events.get("is_intervention", False),
            success=success,
            failure=events.get("failure", False) or (ended and not success and not rerecord),
            rerecord=rerecord,
        )

    return poll


KEY_MARKS = {" ": "takeover", "s": "success", "f": "failure", "r": "rerecord"}


def key_marks(read_keys: Callable[[], str] = terminal_keys) -> Callable[[], Marks]:
    """The keys typed since the last poll as marks (`KEY_MARKS`; the module docstring)."""

    def poll() -> Marks:
        keys = read_keys().lower()
        return Marks(**{mark: key in keys for key, mark in KEY_MARKS.items()})

    return poll


def scalar_features(features: Mapping[str, Any]) -> list[str]:
    """The scalar features, in order: what LeRobot stacks into `observation.state` or
    `action` (`hw_to_dataset_features`: the features typed `float`)."""
    return [k for k, v in features.items() if v is float]


def camera_features(features: Mapping[str, Any]) -> list[str]:
    """The camera features, in order: LeRobot types them with their (H, W, 3) shape."""
    return [k for k, v in features.items() if isinstance(v, tuple) and len(v) == 3]


def resize(image: Any, size: tuple[int, int]) -> np.ndarray:
    """A camera frame (H, W, 3) at `size` (height, width), uint8; bilinear, antialiased."""
    frame = np.asarray(image)
    if frame.shape[:2] == size:
        return frame.astype(np.uint8, copy=False)
    x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return x[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


class LeRobotEnv:
    """A LeRobot `Robot` as an episode environment (see the module docstring)."""

    def __init__(
        self,
        robot: Any,
        *,
        marks: Callable[[], Marks],
        hz: float,
        max_steps: int,
        task: str = "",
        instruction: str = "",
        cameras: Mapping[str, tuple[int, int]] | None = None,
        units: ActionUnits | None = None,
        c_fail: float | None = None,
        timeout_is_failure: bool = True,
        ready: Callable[[int], None] | None = None,
    ) -> None:
        self.robot = robot
        self.marks = marks
        self.clock = Deadlines(hz)
        self.control_period = self.clock.period
        self.task = task
        self.instruction = instruction
        self._max_steps = max_steps
        self.steps = 0
        self.limit = max_steps
        self.cameras = dict(cameras or {})
        self.state_keys = scalar_features(robot.observation_features)
        self.camera_keys = camera_features(robot.observation_features)
        self.action_keys = scalar_features(robot.action_features)
        self.units = units or ActionUnits.identity(self.action_dim)
        if len(self.units.low) != self.action_dim:
            raise UsageError(
                f"its {self.action_dim} action values ({', '.join(self.action_keys)}) and the "
                f"action units' {len(self.units.low)}: serve a run trained on this robot's data"
            )
        self.c_fail = float(max_steps if c_fail is None else c_fail)
        self.timeout_is_failure = timeout_is_failure
        self.ready = ready or (lambda seed: None)
        self.actor = "policy"
        missing = [c for c in self.cameras if c not in self.camera_keys]
        if missing:
            raise UsageError(
                f"its cameras ({', '.join(self.camera_keys) or 'none'}) lack "
                f"{', '.join(missing)}, which the served run reads: name the robot's cameras so"
            )

    # --- sizes -----------------------------------------------------------------------------

    @property
    def max_steps(self) -> int:
        return self._max_steps

    @property
    def state_dim(self) -> int:
        return len(self.state_keys)

    @property
    def action_dim(self) -> int:
        return len(self.action_keys)

    @property
    def sim_state_dim(self) -> int:
        return 0

    # --- units -----------------------------------------------------------------------------

    def to_robot(self, action: np.ndarray) -> dict[str, float]:
        """aloe's action in [-1, 1] as the robot's `send_action` argument."""
        values = self.units.to_robot(action)
        return dict(zip(self.action_keys, map(float, values), strict=True))

    def from_robot(self, action: Mapping[str, Any]) -> np.ndarray:
        """An action in the robot's features (a leader arm's) in aloe's [-1, 1]."""
        return self.units.to_unit([float(action[k]) for k in self.action_keys])

    # --- the episode -----------------------------------------------------------------------

    def reset(self, *, seed: int) -> tuple[Obs, Info]:
        """The person sets the scene (`ready`), then the episode's clock starts."""
        if not self.robot.is_connected:
            self.robot.connect()
        self.ready(seed)
        self.marks()  # what was signalled while the scene was set is not this episode's
        self.steps = 0
        self.limit = self._max_steps
        self.actor = "policy"
        obs = self.observe()
        self.clock.restart()
        return obs, {"success": False, "failure_reason": ""}

    def step(self, action: np.ndarray) -> tuple[Obs, float, bool, bool, Info]:
        self.robot.send_action(self.to_robot(action))
        self.clock.wait()
        obs = self.observe()
        self.steps += 1
        marks = self.marks()
        if marks.rerecord:
            raise Rerecord(f"the operator dropped the episode at step {self.steps}")
        success = marks.success
        reason = "operator: failure" if marks.failure and not success else ""
        if not success and not reason and self.steps >= self.limit:
            reason = "timeout" if self.timeout_is_failure else ""
        truncated = not success and not reason and self.steps >= self.limit
        info = {
            "success": success,
            "failure_reason": reason,
            "progress": 0.0,
            "takeover": marks.takeover,
        }
        reward = self.reward(success=success, failed=bool(reason))
        return obs, reward, success or bool(reason), truncated, info

    def observe(self) -> Obs:
        raw = self.robot.get_observation()
        obs: Obs = {
            "state": np.asarray([raw[k] for k in self.state_keys], np.float32),
            "instruction": self.instruction,
        }
        if self.cameras:
            obs["images"] = {c: resize(raw[c], size) for c, size in self.cameras.items()}
        return obs

    def reward(self, *, success: bool, failed: bool) -> float:
        """Eq. 14: 0 at a successful end, −C_fail at a failed end, −1 otherwise."""
        return 0.0 if success else -self.c_fail if failed else -1.0

    def reset_progress(self) -> None:
        pass

    def hand_to(self, actor: str) -> None:
        self.actor = actor

    def snapshot(self) -> dict[str, Any]:
        return {}

    def restore(self, snap: dict[str, Any]) -> Obs:
        """A real scene stays where it is: the observation there."""
        return self.observe()

    def sim_state(self) -> np.ndarray:
        return np.zeros(0)

    def close(self) -> None:
        if self.robot.is_connected:
            self.robot.disconnect()


class LeRobotTeleop:
    """A LeRobot `Teleoperator` (a leader arm) as the `aloe.robot.teleop.Teleop` watching a
    `LeRobotEnv`: it takes over on the takeover mark, and its correction is the leader's
    `get_action()`, read in the robot's action features."""

    def __init__(self, teleop: Any, env: LeRobotEnv) -> None:
        self.teleop = teleop
        self.env = env
        keys = scalar_features(teleop.action_features)
        lacking = [k for k in env.action_keys if k not in keys]
        if lacking:
            raise UsageError(
                f"its actions ({', '.join(keys) or 'none'}) lack the robot's "
                f"{', '.join(lacking)}: a leader arm of the same robot gives them"
            )

    def watch(self, obs: Obs, info: Info) -> str | None:
        return "operator takeover" if info.get("takeover") else None

    def act(self, obs: Obs) -> np.ndarray:
        return self.env.from_robot(self.teleop.get_action())


def served_env(
    robot: Any,
    meta: Mapping[str, Any],
    *,
    marks: Callable[[], Marks],
    hz: float | None = None,
    ready: Callable[[int], None] | None = None,
) -> LeRobotEnv:
    """`robot` as the environment of the run `aloe serve` serves (`meta`: the metadata it
    sent on connect): the run's time limit, task, first instruction, cameras and image size
    and action units, at `hz` (default: the run's frame rate). A robot whose sizes do not
    fit the run is refused with one line (UsageError)."""
    cfg = TrainConfig.from_json(meta["config"])
    if meta.get("sim_state_dim") is not None:
        raise UsageError(
            f"the served run's store keeps a simulator state per step ({meta['sim_state_dim']} "
            "values), which a real robot has not: serve a run trained with "
            "--collect.no-record-sim-state"
        )
    for what, features, want in (
        ("observation.state", robot.observation_features, int(meta["state_dim"])),
        ("action", robot.action_features, int(meta["action_dim"])),
    ):
        keys = scalar_features(features)
        if len(keys) != want:
            raise UsageError(
                f"its {what} has {len(keys)} values ({', '.join(keys)}) and the served run's "
                f"{want}: serve a run trained on this robot's data"
            )
    return LeRobotEnv(
        robot,
        marks=marks,
        hz=hz or float(meta.get("fps") or 30.0),
        max_steps=cfg.env.max_steps,
        task=cfg.task,
        instruction=str(meta["instructions"][0]),
        cameras={c: (int(h), int(w)) for c, (h, w) in meta.get("cameras", {}).items()},
        units=ActionUnits.from_metadata(meta, int(meta["action_dim"])),
        c_fail=cfg.env.c_fail,
        timeout_is_failure=cfg.env.timeout_is_failure,
        ready=ready,
    )

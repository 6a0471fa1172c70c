"""A fake LeRobot robot and leader arm: subclasses of lerobot 0.4.4's abstract `Robot` and
`Teleoperator`, registered with their config types as LeRobot's own devices are, in memory
and deterministic. `aloe robot --lerobot-robot type=aloe_fake_arm,...` makes them through
LeRobot's `make_robot_from_config` (which finds a plugin's device class beside its config).

The arm has `joints` position-controlled joints (`joint<i>.pos`, the action features) and
fixed scalar sensors: its state is `rest` with each joint's commanded position, scaled by
`gain`, added to the first entries (so that a MetaWorld-shaped state stays within a smoke
run's demonstration range). It keeps every action it was sent (`FakeArm.made[-1].sent`).

The leader holds `pose` and presses its buttons on a script counted in polls of
`get_teleop_events()` (one per control step, one more at each reset): the intervention pedal
from poll `takeover_at` on, success `succeed_after` polls later; with `rerecord_at`, the
first episode is dropped at that poll (and the script starts again).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

import numpy as np
from lerobot.cameras import CameraConfig
from lerobot.robots import Robot, RobotConfig
from lerobot.teleoperators import TeleoperatorConfig
from lerobot.teleoperators.teleoperator import Teleoperator
from lerobot.teleoperators.utils import TeleopEvents
from lerobot.utils.errors import DeviceAlreadyConnectedError, DeviceNotConnectedError


class InMemory:
    """What LeRobot asks of any device, for one that needs no port and no calibration: it
    connects once, refuses a second connect and any use while disconnected, as LeRobot's do."""

    _connected = False

    @property
    def is_connected(self) -> bool:
        return self._connected

    def connect(self, calibrate: bool = True) -> None:
        if self._connected:
            raise DeviceAlreadyConnectedError(f"{self} already connected")
        self._connected = True

    def disconnect(self) -> None:
        self.require_connected()
        self._connected = False

    def require_connected(self) -> None:
        if not self._connected:
            raise DeviceNotConnectedError(f"{self} is not connected")

    @property
    def is_calibrated(self) -> bool:
        return True

    def calibrate(self) -> None:
        pass

    def configure(self) -> None:
        pass


@RobotConfig.register_subclass("aloe_fake_arm")
@dataclass
class FakeArmConfig(RobotConfig):
    joints: int = 4
    rest: list[float] = field(default_factory=lambda: [0.0] * 6)
    gain: float = 0.05
    cameras: dict[str, CameraConfig] = field(default_factory=dict)  # unused: see `camera`
    camera: list[int] | None = None  # (height, width) of a `front` camera, if any


class FakeArm(InMemory, Robot):
    config_class = FakeArmConfig
    name = "aloe_fake_arm"
    made: ClassVar[list[FakeArm]] = []

    def __init__(self, config: FakeArmConfig) -> None:
        super().__init__(config)
        self.config = config
        self.position = np.zeros(config.joints)
        self.sent: list[dict[str, float]] = []
        FakeArm.made.append(self)

    @cached_property
    def observation_features(self) -> dict[str, Any]:
        joints = {f"joint{i}.pos": float for i in range(self.config.joints)}
        sensors = {f"sensor{i}": float for i in range(self.config.joints, len(self.config.rest))}
        camera = {"front": (*self.config.camera, 3)} if self.config.camera else {}
        return {**joints, **sensors, **camera}

    @cached_property
    def action_features(self) -> dict[str, Any]:
        return {f"joint{i}.pos": float for i in range(self.config.joints)}

    def get_observation(self) -> dict[str, Any]:
        self.require_connected()
        state = np.asarray(self.config.rest, np.float64).copy()
        state[: self.config.joints] += self.config.gain * self.position
        scalars = [k for k, v in self.observation_features.items() if v is float]
        obs: dict[str, Any] = dict(zip(scalars, map(float, state), strict=True))
        if self.config.camera:
            h, w = self.config.camera
            obs["front"] = np.full((h, w, 3), len(self.sent) % 256, np.uint8)
        return obs

    def send_action(self, action: dict[str, Any]) -> dict[str, Any]:
        self.require_connected()
        self.sent.append(dict(action))
        self.position = np.asarray([action[k] for k in self.action_features], np.float64)
        return action


@TeleoperatorConfig.register_subclass("aloe_fake_leader")
@dataclass
class FakeLeaderConfig(TeleoperatorConfig):
    pose: list[float] = field(default_factory=lambda: [0.1, -0.2, 0.3, 0.5])
    takeover_at: int = 4
    succeed_after: int = 5
    rerecord_at: int = 0  # 0: no re-record
    unplugged: bool = False  # connect fails, as a leader on a wrong port does


class FakeLeader(InMemory, Teleoperator):
    config_class = FakeLeaderConfig
    name = "aloe_fake_leader"
    made: ClassVar[list[FakeLeader]] = []

    def __init__(self, config: FakeLeaderConfig) -> None:
        super().__init__(config)
        self.config = config
        self.polls = 0
        self.rerecorded = False
        FakeLeader.made.append(self)

    @cached_property
    def action_features(self) -> dict[str, Any]:
        return {f"joint{i}.pos": float for i in range(len(self.config.pose))}

    @cached_property
    def feedback_features(self) -> dict[str, Any]:
        return {}

    def connect(self, calibrate: bool = True) -> None:
        if self.config.unplugged:
            raise ConnectionError(f"could not open the port of {self}\n(is it plugged in?)")
        super().connect(calibrate)

    def get_action(self) -> dict[str, Any]:
        self.require_connected()
        return dict(zip(self.action_features, map(float, self.config.pose), strict=True))

    def get_teleop_events(self) -> dict[TeleopEvents, bool]:
        """LeRobot's event keys, as its gamepad sends them."""
        self.polls += 1
        cfg = self.config
        rerecord = not self.rerecorded and self.polls == cfg.rerecord_at
        success = self.polls == cfg.takeover_at + cfg.succeed_after
        events = {
            TeleopEvents.IS_INTERVENTION: self.polls >= cfg.takeover_at,
            TeleopEvents.TERMINATE_EPISODE: rerecord or success,
            TeleopEvents.SUCCESS: success,
            TeleopEvents.RERECORD_EPISODE: rerecord,
        }
        if rerecord or success:  # the episode ends: the script starts again
            self.rerecorded |= rerecord
            self.polls = 0
        return events

    def send_feedback(self, feedback: dict[str, Any]) -> None:
        pass

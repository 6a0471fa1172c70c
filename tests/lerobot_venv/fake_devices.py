"""A fake SO-101 follower and leader arm: subclasses of lerobot 0.4.4's abstract `Robot` and
`Teleoperator`, registered with their config types as LeRobot's own devices are, in memory
and deterministic. `aloe robot --lerobot-robot type=aloe_fake_arm,...` makes them through
LeRobot's `make_robot_from_config` (which finds a plugin's device class beside its config).

The arm has an SO-101's six position-controlled motors (`<motor>.pos` in degrees, its state
and its action features, as LeRobot's `so101_follower` names them): it starts at `start` and
goes where it is sent at once, and keeps every action it was sent (`FakeArm.made[-1].sent`).

The leader holds `pose` (degrees) and presses its buttons on a script counted in polls of
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


MOTORS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
"""An SO-101's motors, whose `<motor>.pos` are its state and its action (degrees)."""
START = [0.0, -100.0, 95.0, 70.0, 0.0, 10.0]  # the arm folded at rest, gripper closed


@RobotConfig.register_subclass("aloe_fake_arm")
@dataclass
class FakeArmConfig(RobotConfig):
    motors: list[str] = field(default_factory=lambda: list(MOTORS))
    start: list[float] = field(default_factory=lambda: list(START))
    cameras: dict[str, CameraConfig] = field(default_factory=dict)  # unused: see `camera`
    camera: list[int] | None = None  # (height, width) of a `front` camera, if any


class FakeArm(InMemory, Robot):
    config_class = FakeArmConfig
    name = "aloe_fake_arm"
    made: ClassVar[list[FakeArm]] = []

    def __init__(self, config: FakeArmConfig) -> None:
        super().__init__(config)
        self.config = config
        self.position = np.asarray(config.start, np.float64)
        self.sent: list[dict[str, float]] = []
        FakeArm.made.append(self)

    @cached_property
    def observation_features(self) -> dict[str, Any]:
        camera = {"front": (*self.config.camera, 3)} if self.config.camera else {}
        return {**self.action_features, **camera}

    @cached_property
    def action_features(self) -> dict[str, Any]:
        return {f"{m}.pos": float for m in self.config.motors}

    def get_observation(self) -> dict[str, Any]:
        self.require_connected()
        obs: dict[str, Any] = dict(
            zip(self.action_features, map(float, self.position), strict=True)
        )
        if self.config.camera:
            h, w = self.config.camera
            obs["front"] = np.full((h, w, 3), len(self.sent) % 256, np.uint8)
        return obs

    def send_action(self, action: dict[str, Any]) -> dict[str, Any]:
        self.require_connected()
        self.sent.append(dict(action))
        self.position = np.asarray([action[k] for k in self.action_features], np.float64)
        return action


POSE = [20.0, -40.0, 50.0, 60.0, 5.0, 30.0]  # over the cube, gripper open; the wrist rolled


@TeleoperatorConfig.register_subclass("aloe_fake_leader")
@dataclass
class FakeLeaderConfig(TeleoperatorConfig):
    motors: list[str] = field(default_factory=lambda: list(MOTORS))
    pose: list[float] = field(default_factory=lambda: list(POSE))
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
        return {f"{m}.pos": float for m in self.config.motors}

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

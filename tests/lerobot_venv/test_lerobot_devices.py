"""A LeRobot robot and teleoperator as aloe's environment and operator: CONFIG's two
spellings, the person's marks, the units, and the one-line refusals of `aloe robot`
(before any device is connected or anything recorded)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lerobot")
pytest.importorskip("websockets")

import fake_devices  # noqa: E402  (after the skip: it imports lerobot)
from lerobot.teleoperators import TeleopEvents  # noqa: E402

from aloe.cli import main  # noqa: E402
from aloe.envs.robot_spec import ActionUnits  # noqa: E402
from aloe.errors import UsageError  # noqa: E402
from aloe.robot.lerobot_devices import make_devices, read_config, split_pairs  # noqa: E402
from aloe.robot.lerobot_env import (  # noqa: E402
    LeRobotEnv,
    LeRobotTeleop,
    Marks,
    key_marks,
    marks_of_teleop,
    resize,
    served_env,
)
from aloe.robot.teleop import Rerecord  # noqa: E402


def test_config_spellings_decode_to_the_same_lerobot_config(tmp_path: Path):
    cameras = "{front: {type: opencv, index_or_path: 0, width: 640, height: 480, fps: 30}}"
    inline = f"type=so101_follower,port=/dev/ttyACM0,id=007,cameras={cameras}"
    assert split_pairs(inline)[-1] == f"cameras={cameras}"
    fields = {
        "type": "so101_follower",
        "port": "/dev/ttyACM0",
        "id": "007",
        "cameras": {
            "front": {"type": "opencv", "index_or_path": 0, "width": 640, "height": 480, "fps": 30}
        },
    }
    assert read_config("--lerobot-robot", inline) == fields
    (tmp_path / "arm.json").write_text(json.dumps(fields))
    (tmp_path / "arm.yaml").write_text(
        f"type: so101_follower\nport: /dev/ttyACM0\nid: '007'\ncameras: {cameras}\n"
    )
    for path in ("arm.json", "arm.yaml"):
        assert read_config("--lerobot-robot", str(tmp_path / path)) == fields


def test_lerobot_makes_the_devices_it_ships(tmp_path: Path, capsys):
    robot = f"type=so101_follower,port=/dev/null,calibration_dir={tmp_path}"
    if importlib.util.find_spec("scservo_sdk") is None:  # the SO-101's motor bus: feetech
        assert main(["robot", "--lerobot-robot", robot]) == 2
        assert capsys.readouterr().err == (
            f"aloe robot: error: --lerobot-robot ({robot!r}): LeRobot cannot make it: No "
            "module named 'scservo_sdk' (install lerobot's extra for it)\n"
        )
        return
    follower, leader = make_devices(
        robot, f"type=so101_leader,port=/dev/null,calibration_dir={tmp_path}"
    )
    assert type(follower).__name__ == "SO101Follower" and type(leader).__name__ == "SO101Leader"
    assert follower.action_features == leader.action_features  # the leader gives its actions


def test_a_plugin_device_is_made_from_its_config(tmp_path: Path):
    robot, teleop = make_devices(
        f"type=aloe_fake_arm,motors=[a, b],start=[0.0, 1.0],calibration_dir={tmp_path}", None
    )
    assert isinstance(robot, fake_devices.FakeArm) and teleop is None
    assert list(robot.observation_features) == ["a.pos", "b.pos"]
    assert not robot.is_connected


@pytest.mark.parametrize(
    "config, says",
    [
        ("type=nope,port=/dev/x", "lerobot has no 'nope' here; its types: "),
        ("port=/dev/x", "no `type`; its types: "),
        ("type=so101_follower", "Missing required field(s) `port` for SOFollowerRobotConfig"),
        ("type=so101_follower,port=/dev/x,bogus=1", "The fields `bogus` are not valid"),
        ("type=so101_follower,port", "'port' is not key=value (or give a .json/.yaml file)"),
        ("type=so101_follower,cameras={front: [", "'{front: [' is not YAML: "),
        ("/nowhere/arm.yaml", "cannot read the config: FileNotFoundError: "),
    ],
)
def test_a_bad_config_is_refused_in_one_line(config, says, capsys):
    assert main(["robot", "--lerobot-robot", config]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"aloe robot: error: --lerobot-robot ({config!r}): " + says), err


def served(tmp_path: Path, robot: str, teleop: str | None, warm_run: Path, capsys) -> str:
    """`aloe robot` against `aloe serve` of the warm robot run (state 6, action 6): the
    one-line error, with nothing connected and nothing recorded."""
    from aloe.serve.server import Options, PolicyServer, Running

    calibration = f",calibration_dir={tmp_path}"
    argv = ["--lerobot-robot", robot + calibration]
    argv += ["--lerobot-teleop", teleop + calibration] if teleop else []
    running = Running(PolicyServer(warm_run, Options()))
    try:
        before = len(list((warm_run / "dataset").rglob("*")))
        assert main(["robot", "--server", running.url, "--token", running.server.token, *argv]) == 2
        assert len(list((warm_run / "dataset").rglob("*"))) == before
    finally:
        running.stop()
    assert not any(d.is_connected for d in fake_devices.FakeArm.made + fake_devices.FakeLeader.made)
    err = capsys.readouterr().err  # the server's thread shares it: judge the robot's lines
    robot_lines = [line for line in err.splitlines() if line.startswith("aloe robot")]
    assert len(robot_lines) == 1 and "Traceback" not in err, err
    return robot_lines[0]


def test_a_robot_of_another_size_than_the_run_is_refused(tmp_path, warm_run, capsys):
    robot = "type=aloe_fake_arm,motors=[a, b, c, d],start=[0, 0, 0, 0]"
    line = served(tmp_path, robot, None, warm_run, capsys)
    assert line.endswith(
        "its observation.state has 4 values (a.pos, b.pos, c.pos, d.pos) and the served "
        "run's 6: serve a run trained on this robot's data"
    )


def test_a_teleoperator_without_the_robots_actions_is_refused(tmp_path, warm_run, capsys):
    teleop = "type=aloe_fake_leader,motors=[shoulder_pan, elbow_flex],pose=[0, 0]"
    line = served(tmp_path, "type=aloe_fake_arm", teleop, warm_run, capsys)
    assert line.startswith(f"aloe robot: error: --lerobot-teleop ('{teleop},calibration_dir=")
    assert line.endswith(
        "its actions (shoulder_pan.pos, elbow_flex.pos) lack the robot's shoulder_lift.pos, "
        "wrist_flex.pos, wrist_roll.pos, gripper.pos: a leader arm of the same robot gives them"
    )


def test_a_device_that_cannot_connect_leaves_the_other_disconnected(tmp_path, warm_run, capsys):
    line = served(
        tmp_path, "type=aloe_fake_arm", "type=aloe_fake_leader,unplugged=true", warm_run, capsys
    )
    assert line.startswith("aloe robot: error: --lerobot-teleop ('type=aloe_fake_leader,")
    assert line.endswith(
        "cannot connect: could not open the port of None FakeLeader (is it plugged in?)"
    )
    assert fake_devices.FakeArm.made[-1].sent == []  # connected, then disconnected: unmoved


def test_a_run_that_keeps_simulator_states_is_refused(tmp_path, warm_run):
    meta = {
        "config": (warm_run / "config.json").read_text(),
        "sim_state_dim": 3,
        "state_dim": 6,
        "action_dim": 6,
        "instructions": ["pick up the cube"],
    }
    with pytest.raises(UsageError) as refused:
        served_env(arm(tmp_path), meta, marks=Marks)
    assert str(refused.value) == (
        "the served run's store keeps a simulator state per step (3 values), which a real "
        "robot has not: serve a run trained with --collect.no-record-sim-state"
    )
    meta |= {"sim_state_dim": None, "fps": 25}
    env = served_env(arm(tmp_path), meta, marks=Marks)
    assert env.control_period == pytest.approx(0.04) and env.max_steps == 12  # the run's
    assert env.to_robot(np.full(6, 0.5)) == dict.fromkeys(env.action_keys, 0.5)  # no units sent


def test_lerobot_teleop_events_and_keys_are_the_persons_marks():
    class Gamepad:  # what LeRobot's gamepad returns: TeleopEvents keys
        events = {
            TeleopEvents.IS_INTERVENTION: True,
            TeleopEvents.TERMINATE_EPISODE: True,
            TeleopEvents.SUCCESS: False,
            TeleopEvents.RERECORD_EPISODE: False,
        }

        def get_teleop_events(self):
            return self.events

    assert marks_of_teleop(Gamepad())() == Marks(takeover=True, failure=True)
    Gamepad.events = {"success": True, "terminate_episode": True}  # string keys work too
    assert marks_of_teleop(Gamepad())() == Marks(success=True)
    Gamepad.events = {TeleopEvents.TERMINATE_EPISODE: True, TeleopEvents.RERECORD_EPISODE: True}
    assert marks_of_teleop(Gamepad())() == Marks(rerecord=True)
    keys = iter(["", " ", "S", "xf", "r"])
    poll = key_marks(lambda: next(keys))
    assert [poll() for _ in range(5)] == [
        Marks(),
        Marks(takeover=True),
        Marks(success=True),
        Marks(failure=True),
        Marks(rerecord=True),
    ]


def arm(tmp_path: Path, **fields) -> fake_devices.FakeArm:
    cfg = fake_devices.FakeArmConfig(calibration_dir=tmp_path, **fields)
    robot = fake_devices.FakeArm(cfg)
    robot.connect()
    return robot


def test_actions_map_to_the_robots_units_and_back(tmp_path, warm_run):
    """The served run's units (its dataset's ranges, in `action_units`) both ways: the
    policy's actions to the arm's degrees, the leader's degrees into [-1, 1] (clipped)."""
    from aloe.serve.server import Options, PolicyServer

    meta = PolicyServer(warm_run, Options()).metadata()
    units = ActionUnits.from_metadata(meta, 6)
    np.testing.assert_array_equal(units.low, [0.0, -100.0, 40.0, 50.0, 0.0, 10.0])  # the demos'
    np.testing.assert_array_equal(units.high, [30.0, -30.0, 95.0, 70.0, 0.0, 40.0])
    env = served_env(arm(tmp_path), meta, marks=Marks)
    sent = env.to_robot(np.array([-1.0, 1.0, 0.0, 3.0, 0.7, -0.5]))
    assert list(sent.values()) == [0.0, -30.0, 67.5, 70.0, 0.0, 17.5]  # clipped; roll held
    a = np.array([0.25, -0.5, 0.0, 0.1, 0.0, 1.0], np.float32)
    np.testing.assert_allclose(env.from_robot(env.to_robot(a)), a, atol=1e-6)
    leader = fake_devices.FakeLeader(fake_devices.FakeLeaderConfig(calibration_dir=tmp_path))
    leader.connect()  # its pose: 20, -40, 50, 60, 5, 30 degrees
    np.testing.assert_allclose(
        LeRobotTeleop(leader, env).act({}), [1 / 3, 5 / 7, -7 / 11, 0.0, 0.0, 1 / 3], atol=1e-6
    )


def test_marks_end_the_episode_and_the_clock_keeps_the_rate(tmp_path):
    marks = iter([Marks(), Marks(), Marks(failure=True), Marks(), Marks(success=True)])
    env = LeRobotEnv(
        arm(tmp_path, motors=["elbow_flex"], start=[1.0], camera=[48, 64]),
        marks=lambda: next(marks),
        hz=500,
        max_steps=3,
        cameras={"front": (6, 8)},
        c_fail=7.0,
    )
    obs, _ = env.reset(seed=0)
    assert obs["images"]["front"].shape == (6, 8, 3) and obs["images"]["front"].dtype == np.uint8
    _, reward, done, truncated, info = env.step(np.array([0.5]))
    np.testing.assert_allclose(env.observe()["state"], [0.5])  # where it was sent
    assert (reward, done, truncated, info["failure_reason"]) == (-1.0, False, False, "")
    _, reward, done, _, info = env.step(np.array([0.5]))
    assert (reward, done, info["failure_reason"]) == (-7.0, True, "operator: failure")
    env.limit = env.steps + 1
    _, _, done, _, info = env.step(np.array([0.5]))
    assert done and info["failure_reason"] == "timeout"  # the time limit is a failure
    env.limit = 10
    _, reward, done, _, info = env.step(np.array([0.5]))
    assert (reward, done, info["success"]) == (0.0, True, True)
    assert env.clock.overruns <= 4
    with pytest.raises(Rerecord):
        env.marks = lambda: Marks(rerecord=True)
        env.step(np.array([0.0]))


def test_a_camera_frame_is_resized_and_a_missing_camera_refused(tmp_path):
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[:, 320:] = 200
    small = resize(frame, (48, 64))
    assert small.shape == (48, 64, 3) and small[:, :30].max() == 0 and small[:, 34:].min() == 200
    with pytest.raises(UsageError, match="its cameras \\(none\\) lack wrist, which the served"):
        LeRobotEnv(arm(tmp_path), marks=Marks, hz=10, max_steps=5, cameras={"wrist": (8, 8)})

"""docs/real-robot.md's loop, up to the hardware, with a fake SO-101 and its leader arm
(`fake_devices`: subclasses of lerobot 0.4.4's `Robot` and `Teleoperator`, six motors in
degrees): `aloe dataset inspect` of the LeRobot-written dataset, the robot run's warm start
on it (`conftest.warm_run`), `aloe serve`; then for each iteration `aloe robot
--lerobot-robot ... --lerobot-teleop ...` collects it (a re-recorded episode dropped, then a
takeover by the leader's pedal and a success by its button), `aloe train --resume` trains
it and stops, and the server serves the new version to the robot."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lerobot")
pytest.importorskip("websockets")

import fake_devices  # noqa: E402  (after the skip: it imports lerobot)

from aloe import data as D  # noqa: E402
from aloe.cli import main  # noqa: E402
from aloe.datasets.store import EpisodeStore  # noqa: E402
from aloe.envs.robot_spec import ActionUnits  # noqa: E402

TAKEOVER_AT, SUCCEED_AFTER = 4, 5  # leader polls: one at the reset, then one per step
C_FAIL = 20.0  # Eq. 14's failure cost: the demonstrations' mean length


def device_configs(tmp: Path) -> tuple[str, str]:
    """--lerobot-robot as a YAML file, --lerobot-teleop inline: both of CONFIG's spellings."""
    robot = tmp / "follower.yaml"
    robot.write_text(f"type: aloe_fake_arm\nid: my_follower\ncalibration_dir: {tmp / 'cal'}\n")
    teleop = (
        f"type=aloe_fake_leader,id=my_leader,calibration_dir={tmp / 'cal'},"
        f"takeover_at={TAKEOVER_AT},succeed_after={SUCCEED_AFTER},rerecord_at=3"
    )
    return str(robot), teleop


@pytest.mark.slow
def test_a_robot_run_collects_with_a_takeover_trains_on_resume_and_serves_the_new_version(
    warm_run: Path, so101_dataset: Path, tmp_path: Path, capsys, monkeypatch
):
    from aloe.serve.server import Options, PolicyServer, Running

    assert main(["dataset", "inspect", str(so101_dataset), "--task", "robot"]) == 0
    shown = capsys.readouterr().out
    assert "fits:" in shown and "action units: " in shown
    run = tmp_path / "run"
    shutil.copytree(warm_run, run)
    robot_cfg, teleop_cfg = device_configs(tmp_path)
    spec = json.loads((run / "config.json").read_text())["env"]["robot"]
    assert (spec["state_dim"], spec["action_dim"], spec["fps"]) == (6, 6, 30.0)
    units = ActionUnits.of(spec["action_low"], spec["action_high"])
    running = Running(PolicyServer(run, Options(poll_s=0.05)))
    assert served(running.url)["action_units"] == units.metadata()
    monkeypatch.setenv("ALOE_TOKEN", running.server.token)  # as on the robot computer
    robot = ["robot", "--server", running.url, "--lerobot-robot", robot_cfg]
    try:
        for iteration in (1, 2):
            # the robot collects the iteration by the run's rule: one episode
            capsys.readouterr()
            assert main([*robot, "--lerobot-teleop", teleop_cfg]) == 0
            out, err = capsys.readouterr()
            summary = json.loads(out)
            assert "dropped" in err  # the re-recorded episode, played again
            assert summary["iteration"] == iteration and summary["episodes"] == 1
            assert summary["successes"] == 1 and summary["takeovers"] == 1
            assert summary["late_steps"] >= 0  # the control clock's overruns, reported
            arm, leader = fake_devices.FakeArm.made[-1], fake_devices.FakeLeader.made[-1]
            assert not arm.is_connected and not leader.is_connected  # disconnected after
            check_stored(run, summary["stored"], arm.sent, units, version=iteration - 1)

            # the iteration trains on it (nothing collected in-process) and stops there
            assert main(["train", "--resume", str(run), "--no-progress"]) == 0
            rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
            assert [r["iteration"] for r in rows] == list(range(iteration + 1))
            assert rows[-1]["episodes"] == 1 and rows[-1]["takeovers"] == 1
            assert rows[-1]["human_steps"] == SUCCEED_AFTER
            assert rows[-1]["success_rate"] == 0.0  # the robot's: a takeover, not alone
            assert rows[-1]["eval_episodes"] == 0  # no simulator evaluation
            wait_for_version(running.url, iteration)

        assert "a robot run: no simulator evaluates" in (run / "report.html").read_text()
        assert main(["plot-q", "--run", str(run)]) == 0  # Q along the latest takeover episode
        assert capsys.readouterr().out.strip().endswith("qtrace-episode-4.png")
        # version 2 alone on the robot, nothing recorded: with no teleop and no terminal
        # there are no marks, and the episode runs to the run's time limit
        assert main([*robot, "--episodes", "1", "--no-record"]) == 0
        out, err = capsys.readouterr()
        again = json.loads(out)
        assert "no takeover or outcome marks" in err
        assert again["iteration"] == 3 and again["episodes"] == 1 and again["stored"] == []
        assert again["successes"] == again["takeovers"] == 0
        assert len(fake_devices.FakeArm.made[-1].sent) == 12  # env.max_steps
    finally:
        running.stop()


def wait_for_version(url: str, version: int) -> None:
    deadline = time.time() + 60
    while served(url)["policy_version"] != version:
        assert time.time() < deadline, f"no swap to version {version}"
        time.sleep(0.05)


def served(url: str) -> dict:
    """The metadata `aloe serve` sends on connect."""
    from aloe.robot.connection import Connection

    conn = Connection(url)
    conn.close()
    return dict(conn.metadata)


def check_stored(
    run: Path, indices: list[int], sent: list[dict[str, float]], units: ActionUnits, version: int
) -> None:
    """The episode as in-process collection writes one, in aloe's units: the policy's
    fragment cut by the takeover (a labelled failure), the leader's fragment to the success;
    the arm was sent the same actions in degrees."""
    store = EpisodeStore.open(run / "dataset")
    (row,) = [r for r in store.episodes().to_pylist() if r["episode_index"] in indices]
    assert row["iteration"] == version + 1 and row["takeovers"] == 1
    frames = store.load_frames(list(D.STEP_COLUMNS) + [D.EPISODE])
    mine = frames[D.EPISODE] == row["episode_index"]
    f = {k: v[mine] for k, v in frames.items()}
    policy = TAKEOVER_AT - 1
    assert list(f[D.SOURCE]) == ["policy"] * policy + ["human"] * SUCCEED_AFTER
    assert list(f[D.FRAGMENT]) == [0] * policy + [1] * SUCCEED_AFTER
    assert (f[D.INTERVENTION] == (f[D.SOURCE] == "human")).all()
    assert (f[D.POLICY_VERSION] == np.where(f[D.SOURCE] == "policy", version, -1)).all()
    cut = policy - 1
    assert f[D.DONE][cut] and f[D.FAILURE_REASON][cut] == "takeover: operator takeover"
    assert f[D.REWARD][cut] == -C_FAIL  # Eq. 14
    assert f[D.SUCCESS][-1] and f[D.DONE][-1] and f[D.REWARD][-1] == 0.0
    assert np.abs(f[D.ACTION]).max() <= 1.0  # stored in aloe's units
    pose = np.asarray(fake_devices.FakeLeaderConfig().pose)
    np.testing.assert_allclose(f[D.ACTION][policy:], [units.to_unit(pose)] * SUCCEED_AFTER)
    # what the arm was sent: the dropped episode's 2 steps, then this one's, in degrees
    executed = np.asarray([list(a.values()) for a in sent[2:]])
    np.testing.assert_allclose(executed, units.to_robot(f[D.ACTION]), rtol=1e-5, atol=1e-4)
    roll = fake_devices.MOTORS.index("wrist_roll")  # never rolled in the demonstrations
    held = pose.copy()
    held[roll] = 0.0  # the leader's 5 degrees are beyond the demonstrations' range: held at 0
    np.testing.assert_allclose(executed[policy:], [held] * SUCCEED_AFTER, atol=1e-4)
    assert (executed[:, roll] == 0.0).all()

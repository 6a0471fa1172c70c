"""Two iterations of the real-robot loop, with a fake LeRobot arm and leader arm
(`fake_devices`: subclasses of lerobot 0.4.4's `Robot` and `Teleoperator`): `aloe serve`
serves a smoke run; each iteration, `aloe robot --lerobot-robot ... --lerobot-teleop ...`
collects it (a re-recorded episode dropped, then a takeover by the leader's pedal and a
success by its button), the run trains on it (iteration 1 with the guide's one-iteration
snippet, the run's last with `aloe train --resume`) and the server serves the new version
to the robot. docs/real-robot.md's commands, up to the hardware."""

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

TAKEOVER_AT, SUCCEED_AFTER = 4, 5  # leader polls: one at the reset, then one per step


def device_configs(run: Path, tmp: Path) -> tuple[str, str]:
    """--lerobot-robot as a YAML file, --lerobot-teleop inline: both of CONFIG's spellings."""
    rest = EpisodeStore.open(run / "dataset").load_frames([D.STATE])[D.STATE][0]
    robot = tmp / "follower.yaml"
    robot.write_text(
        f"type: aloe_fake_arm\nid: my_follower\ncalibration_dir: {tmp / 'calibration'}\n"
        f"rest: {json.dumps(rest.tolist())}\n"
    )
    teleop = (
        f"type=aloe_fake_leader,id=my_leader,calibration_dir={tmp / 'calibration'},"
        f"takeover_at={TAKEOVER_AT},succeed_after={SUCCEED_AFTER},rerecord_at=3"
    )
    return str(robot), teleop


@pytest.mark.slow
def test_two_iterations_of_collect_with_a_takeover_train_and_serve(
    warm_run: Path, one_iteration, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
):
    from aloe.config import TrainConfig
    from aloe.serve.server import Options, PolicyServer, Running

    dataset = TrainConfig.load(warm_run).demos  # the LeRobot dataset the run started from
    assert main(["dataset", "inspect", str(dataset), "--task", "pick-place-v3"]) == 0
    assert "fits:" in capsys.readouterr().out
    run = tmp_path / "run"
    shutil.copytree(warm_run, run)
    robot_cfg, teleop_cfg = device_configs(run, tmp_path)
    running = Running(PolicyServer(run, Options(poll_s=0.05)))
    monkeypatch.setenv("ALOE_TOKEN", running.server.token)  # as on the robot computer
    robot = ["robot", "--server", running.url, "--lerobot-robot", robot_cfg]
    robot += ["--lerobot-teleop", teleop_cfg]
    try:
        for iteration in (1, 2):
            # the robot collects the iteration by the run's rule: one episode
            capsys.readouterr()
            assert main(robot) == 0
            out, err = capsys.readouterr()
            summary = json.loads(out)
            assert "dropped" in err  # the re-recorded episode, played again
            assert summary["iteration"] == iteration and summary["episodes"] == 1
            assert summary["successes"] == 1 and summary["takeovers"] == 1
            assert summary["late_steps"] >= 0  # the control clock's overruns, reported
            arm, leader = fake_devices.FakeArm.made[-1], fake_devices.FakeLeader.made[-1]
            assert not arm.is_connected and not leader.is_connected  # disconnected after
            check_stored(run, summary["stored"], arm.sent, version=iteration - 1)

            # the iteration trains on it (nothing collected in-process), and is served
            if iteration == 1:  # the run has 2: it stops after this one
                one_iteration(TrainConfig.load(run), resume=True)
            else:
                assert main(["train", "--resume", str(run), "--no-progress"]) == 0
            rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
            assert [r["iteration"] for r in rows] == list(range(iteration + 1))
            assert rows[-1]["episodes"] == 1 and rows[-1]["takeovers"] == 1
            assert rows[-1]["human_steps"] == SUCCEED_AFTER
            wait_for_version(running.url, iteration)

        assert (run / "report.html").is_file()
        assert main(["plot-q", "--run", str(run)]) == 0  # Q along the latest takeover episode
        assert capsys.readouterr().out.strip().endswith("qtrace-episode-3.png")
        # version 2 alone on the robot, nothing recorded: with no teleop and no terminal
        # there are no marks, and the episode runs to the run's time limit
        alone = ["robot", "--server", running.url, "--lerobot-robot", robot_cfg]
        assert main([*alone, "--episodes", "1", "--no-record"]) == 0
        out, err = capsys.readouterr()
        again = json.loads(out)
        assert "no takeover or outcome marks" in err
        assert again["iteration"] == 3 and again["episodes"] == 1 and again["stored"] == []
        assert again["successes"] == again["takeovers"] == 0
        assert len(fake_devices.FakeArm.made[-1].sent) == 60  # env.max_steps
    finally:
        running.stop()


def wait_for_version(url: str, version: int) -> None:
    deadline = time.time() + 60
    while served_version(url) != version:
        assert time.time() < deadline, f"no swap to version {version}"
        time.sleep(0.05)


def served_version(url: str) -> int:
    from aloe.robot.connection import Connection

    conn = Connection(url)
    conn.close()
    return int(conn.metadata["policy_version"])


def check_stored(run: Path, indices: list[int], sent: list[dict[str, float]], version: int) -> None:
    """The episode as in-process collection writes one: the policy's fragment cut by the
    takeover (a labelled failure), the leader's fragment to the success."""
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
    assert f[D.REWARD][cut] == -100.0  # Eq. 14: -C_fail
    assert f[D.SUCCESS][-1] and f[D.DONE][-1] and f[D.REWARD][-1] == 0.0
    pose = fake_devices.FakeLeaderConfig().pose
    np.testing.assert_allclose(f[D.ACTION][policy:], [pose] * SUCCEED_AFTER, rtol=1e-6)
    # what the arm was sent: the dropped episode's 2 steps, then this one's, in its units
    executed = np.asarray([list(a.values()) for a in sent[2:]])
    np.testing.assert_allclose(executed, f[D.ACTION], rtol=1e-6, atol=1e-7)

"""Fixtures of the LeRobot robot tests, run in the lerobot virtualenv (`.ci/run`): the
fake SO-101's demonstrations written by LeRobot's own writer, and a robot run after its warm
start on them, as docs/real-robot.md starts one. (Not named tests/lerobot: pytest puts
tests/ on sys.path, where a lerobot/ directory would pass for the lerobot package.)"""

from __future__ import annotations

from pathlib import Path

import pytest

# the guide's `aloe train --task robot --demos ...`, at a test's sizes: the smoke preset, an
# episode per iteration, a 12-step time limit and a few update steps
SIZES = [
    *("--preset", "smoke", "--iterations", "2", "--bc-steps", "5", "--no-progress"),
    *("--env.max-steps", "12", "--collect.success-quota", "1", "--collect.max-episodes", "1"),
    *("--actor.num-flow-steps", "2", "--aloe.critic-steps", "3", "--aloe.actor-steps", "2"),
]


@pytest.fixture(scope="session")
def so101_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three demonstrations of the fake SO-101 at 30 fps, in degrees, written by LeRobot."""
    from fake_devices import MOTORS
    from recording import arm_demos, record

    root = tmp_path_factory.mktemp("so101") / "so101-pick"
    names = [f"{m}.pos" for m in MOTORS]
    return record(root, arm_demos(), fps=30, robot_type="so101_follower", names=names)


@pytest.fixture(scope="session")
def warm_run(so101_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A robot run (`--task robot`) of two iterations after its BC warm start (checkpoint 0)
    on the fake SO-101's dataset, collecting one episode per iteration. Tests that change it
    work on a copy."""
    import torch

    from aloe.cli import main

    torch.set_num_threads(1)  # server and robot share the cores: one thread each
    run = tmp_path_factory.mktemp("real") / "so101"
    argv = ["train", "--task", "robot", "--demos", str(so101_dataset), "--out", str(run)]
    assert main([*argv, *SIZES]) == 0  # the warm start alone: a robot run stops there
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["iter-0000"]
    return run

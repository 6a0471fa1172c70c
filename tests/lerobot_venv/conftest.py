"""Fixtures of the LeRobot robot tests, run in the lerobot virtualenv (`.ci/run`): a smoke
run after its warm start, shaped for a real robot, and docs/real-robot.md's way of training
one iteration at a time. (Not named tests/lerobot: pytest puts tests/ on sys.path, where a
lerobot/ directory would pass for the lerobot package.)"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


class Trained(Exception):
    """Raised once an iteration's checkpoint is saved: the run stops there."""


def stop(row: dict[str, Any]) -> None:
    raise Trained(row["iteration"])


def train_one_iteration(cfg: Any, resume: bool) -> None:
    """docs/real-robot.md's snippet: train (or resume) the run up to its next checkpoint,
    and stop before it would collect the following iteration in-process."""
    import aloe

    with contextlib.suppress(Trained):
        aloe.run_training(cfg, on_iteration=stop, resume=resume)


@pytest.fixture(scope="session")
def one_iteration() -> Callable[[Any, bool], None]:
    return train_one_iteration


@pytest.fixture(scope="session")
def warm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smoke run of two iterations after its BC warm start (checkpoint 0), collecting one
    episode per iteration, with no simulator state in its store (a real robot has none).
    Tests that change it work on a copy."""
    import torch

    from aloe.collect import CollectConfig
    from aloe.config import preset

    torch.set_num_threads(1)  # server and robot share the cores: one thread each
    cfg = preset("smoke")
    cfg.out, cfg.progress = tmp_path_factory.mktemp("real") / "run", False
    cfg.iterations, cfg.bc_steps, cfg.eval_episodes = 2, 5, 1
    cfg.env = dataclasses.replace(cfg.env, max_steps=60, c_fail=100.0)
    cfg.operator = dataclasses.replace(cfg.operator, profile="oracle")
    cfg.collect = CollectConfig(success_quota=1, max_episodes=1, record_sim_state=False)
    cfg.actor = dataclasses.replace(cfg.actor, num_flow_steps=2)
    cfg.aloe = dataclasses.replace(cfg.aloe, critic_steps=3, actor_steps=2)
    train_one_iteration(cfg, resume=False)  # the warm start alone
    assert (cfg.out / "checkpoints").is_dir() and not (cfg.out / "report.html").exists()
    return cfg.out

"""Fixtures of the LeRobot robot tests, run in the lerobot virtualenv (`.ci/run`): a smoke
run after its warm start on a LeRobot-written dataset, as docs/real-robot.md starts one,
and the guide's way of training one iteration at a time. (Not named tests/lerobot: pytest puts tests/ on sys.path, where a
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
    """A smoke run of two iterations after its BC warm start (checkpoint 0) on a LeRobot
    dataset (`--demos`: two MetaWorld expert episodes written by LeRobot's own writer),
    collecting one episode per iteration, with no simulator state in its store. Tests that
    change it work on a copy."""
    import torch
    from recording import record

    from aloe.collect import CollectConfig, collect
    from aloe.config import preset
    from aloe.envs.base import EnvConfig
    from aloe.envs.registry import make_env
    from aloe.operators.profiles import make_operator
    from aloe.operators.scripted import OperatorConfig

    torch.set_num_threads(1)  # server and robot share the cores: one thread each
    root = tmp_path_factory.mktemp("real")
    task = "pick-place-v3"
    rule = CollectConfig(success_quota=2, max_episodes=2, record_sim_state=False)
    expert, _ = collect(
        make_env(EnvConfig(task=task, max_steps=200)),
        make_operator(task, OperatorConfig(), seed=0),
        rule,
        policy=None,
        seeds=iter(range(2)),
    )
    cfg = preset("smoke", task=task)
    cfg.demos = record(root / "lerobot-dataset", expert)
    cfg.out = root / "run"
    cfg.progress = False
    cfg.iterations = 2
    cfg.bc_steps = 5
    cfg.eval_episodes = 1
    cfg.env = dataclasses.replace(cfg.env, max_steps=60, c_fail=100.0)
    cfg.collect = CollectConfig(success_quota=1, max_episodes=1)
    cfg.actor = dataclasses.replace(cfg.actor, num_flow_steps=2)
    cfg.aloe = dataclasses.replace(cfg.aloe, critic_steps=3, actor_steps=2)
    train_one_iteration(cfg, resume=False)  # the warm start alone
    assert (cfg.out / "checkpoints").is_dir() and not (cfg.out / "report.html").exists()
    return cfg.out

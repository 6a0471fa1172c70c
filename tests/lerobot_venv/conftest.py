"""Fixtures of the LeRobot robot tests, run in the lerobot virtualenv (`.ci/run`): a smoke
run after its warm start, shaped for a real robot. (Not named tests/lerobot: pytest puts
tests/ on sys.path, where a lerobot/ directory would pass for the lerobot package.)"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def warm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smoke run of two iterations after its BC warm start (checkpoint 0), collecting one
    episode per iteration, with no simulator state in its store (a real robot has none). Tests that
    change it work on a copy."""
    import torch

    from aloe import train
    from aloe.collect import CollectConfig
    from aloe.config import preset
    from aloe.run_dir import start_run_dir

    torch.set_num_threads(1)  # server and robot share the cores: one thread each
    cfg = preset("smoke")
    cfg.out, cfg.progress = tmp_path_factory.mktemp("real") / "run", False
    cfg.iterations, cfg.bc_steps, cfg.eval_episodes = 2, 5, 1
    cfg.env = dataclasses.replace(cfg.env, max_steps=60, c_fail=100.0)
    cfg.operator = dataclasses.replace(cfg.operator, profile="oracle")
    cfg.collect = CollectConfig(success_quota=1, max_episodes=1, record_sim_state=False)
    cfg.actor = dataclasses.replace(cfg.actor, num_flow_steps=2)
    cfg.aloe = dataclasses.replace(cfg.aloe, critic_steps=3, actor_steps=2)
    cfg = train.prepare_run(cfg, resume=False)
    trainer = train.Trainer(cfg)
    start_run_dir(cfg)
    trainer.store = trainer._open_store()
    trainer.warm_start()
    return cfg.out

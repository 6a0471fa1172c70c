"""Fixtures of the server tests: an untrained smoke run directory, a server on loopback."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

pytest.importorskip("websockets")
pytest.importorskip("msgpack")


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Server and robot share 2 loaded cores: one torch thread each is faster than two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_untrained_run(out: Path) -> Path:
    """A smoke run directory without training: config.json, an untrained learner as
    checkpoint 0, and an empty store laid out as the trainer lays it (sim states kept)."""
    from aloe import checkpoint
    from aloe.config import preset
    from aloe.datasets.store import EpisodeStore
    from aloe.envs.metaworld import CONTROL_HZ, TaskEnv
    from aloe.run import build_learner

    cfg = preset("smoke")
    cfg.out, cfg.progress = out, False
    cfg.env = dataclasses.replace(cfg.env, c_fail=100.0)  # no expert episodes to time
    cfg.actor = dataclasses.replace(cfg.actor, num_flow_steps=2)
    cfg = cfg.resolved()
    out.mkdir(parents=True)
    (out / "config.json").write_text(cfg.to_json())
    state = {"learner": build_learner(cfg).state_dict(), "history": [{"iteration": 0}]}
    checkpoint.save(out / "checkpoints", 0, state)
    env = TaskEnv(cfg.env)
    EpisodeStore.create(
        out / "dataset",
        fps=CONTROL_HZ,
        state_dim=env.state_dim,
        action_dim=env.action_dim,
        sim_state_dim=env.sim_state_dim,
    )
    return out


@pytest.fixture(scope="module")
def untrained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_untrained_run(tmp_path_factory.mktemp("serve") / "run")


@pytest.fixture(scope="module")
def server(untrained_run: Path) -> Iterator[object]:
    """`aloe serve` on a free loopback port, in this process (tests talk to it over TCP)."""
    from aloe.serve.server import Options, PolicyServer, Running

    torch.set_num_threads(1)
    running = Running(PolicyServer(untrained_run, Options(poll_s=0.05)))
    yield running
    running.stop()

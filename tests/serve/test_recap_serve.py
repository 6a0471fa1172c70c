"""`aloe serve` of a RECAP run: chunks conditioned on "positive" with the run's β_cfg, the
client none the wiser, real-time chunking's inpainted chunks too."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from aloe import checkpoint
from aloe.config import TrainConfig
from aloe.policies.indicator import POSITIVE, Guidance
from aloe.policies.rtc import sample_inpainted
from aloe.robot.connection import Connection
from aloe.run import build_learner, load_run
from aloe.serve.policy import ServedPolicy
from aloe.serve.server import Options, PolicyServer, Running

STATE = "observation.state"


@pytest.fixture(scope="module")
def recap_run(untrained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The untrained smoke run as a RECAP run with β_cfg = 2, its indicator embeddings
    random (as trained ones differ), checkpoint 0."""
    run = tmp_path_factory.mktemp("recap") / "run"
    shutil.copytree(untrained_run, run)
    shutil.rmtree(run / "checkpoints")
    config = json.loads((run / "config.json").read_text())
    config["algo"] = "recap"
    config["recap"]["cfg_beta"] = 2.0
    (run / "config.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    learner = build_learner(TrainConfig.from_json(json.dumps(config)))
    with torch.no_grad():
        learner.actor.indicator.copy_(torch.randn_like(learner.actor.indicator))
    state = {"learner": learner.state_dict(), "history": [{"iteration": 0}]}
    checkpoint.save(run / "checkpoints", 0, state)
    return run


def test_served_chunks_act_on_positive_with_the_runs_cfg(recap_run: Path) -> None:
    local = load_run(recap_run)
    assert local.actor.guidance == Guidance(POSITIVE, 2.0)
    policy = local.chunk_policy(seed=0)
    plain = copy.deepcopy(local.actor)
    plain.guidance = None  # the unconditional policy, for contrast
    running = Running(PolicyServer(recap_run, Options(poll_s=0.05)))
    try:
        conn = Connection(running.url)
        conn.call({"type": "episode_start", "instruction": "x", "seed": 3, "record": False})
        obs = {"state": np.linspace(-1, 1, 39).astype(np.float32)}
        remote = conn.call({STATE: obs["state"]})["actions"]  # a plain request
        conn.close()
    finally:
        running.stop()
    policy.reset(3)
    np.testing.assert_array_equal(remote, policy.act_chunk(obs))
    state, row = policy.inputs(obs)
    free = plain.sample(state, row, 1, policy.episode_rng(3))[0, 0].numpy()
    assert not np.allclose(remote, free, atol=1e-3)


def test_rtc_inpaints_the_guided_policys_chunk(recap_run: Path) -> None:
    served = ServedPolicy(load_run(recap_run))
    actor = served.chunks.actor
    obs = {"state": np.linspace(-0.5, 0.5, 39).astype(np.float32)}
    prefix = np.full((4, 4), 0.2, np.float32)
    chunk = served.infer(obs, served.rng(2), (prefix, 2))
    state, row = served.chunks.inputs(obs)
    guided = sample_inpainted(actor, state, row, torch.as_tensor(prefix), 2, served.rng(2))
    np.testing.assert_array_equal(chunk, guided.numpy())
    plain = copy.deepcopy(actor)
    plain.guidance = None
    free = sample_inpainted(plain, state, row, torch.as_tensor(prefix), 2, served.rng(2))
    assert chunk.shape == (10, 4) and not np.allclose(chunk, free.numpy(), atol=1e-3)

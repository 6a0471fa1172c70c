"""`aloe serve` picks the best of N chunks by the run's critic (`aloe.best_of_n`, or
`--best-of-n`), the inpainted ones of real-time chunking too; N = 1 is plain sampling."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from aloe.algos.best_of_n import BestOfNPolicy
from aloe.errors import UsageError
from aloe.policies.chunk_policy import FlowChunkPolicy, acting
from aloe.run import load_run
from aloe.serve.cli import ServeArgs
from aloe.serve.policy import ServedPolicy


def scores(policy: ServedPolicy, obs: dict[str, object], chunks: torch.Tensor) -> torch.Tensor:
    """Q_pess (N,) of chunks (N, h, A) at the observation, by the run's critic."""
    state, row = policy.chunks.inputs(obs)
    n = len(chunks)
    with torch.no_grad():
        q = policy.run.critic.eval()(state.expand(n, -1), row.expand(n), chunks)
    return q.min(dim=0).values


def test_served_chunks_are_the_critics_best_of_n(untrained_run: Path) -> None:
    run = load_run(untrained_run)
    plain, best = ServedPolicy(run), ServedPolicy(run, best_of_n=4)
    assert (plain.best_of_n, best.best_of_n) == (1, 4)  # the run's aloe.best_of_n is 1
    obs = {"state": np.linspace(-0.5, 0.5, 39).astype(np.float32)}
    state, row = plain.chunks.inputs(obs)
    one = plain.infer(obs, plain.rng(5))
    with acting(run.actor):  # as a served chunk is sampled
        expected = run.actor.sample(state, row, 1, plain.rng(5))[0, 0].numpy()
        drawn = run.actor.sample(state, row, 4, best.rng(5))[0]
    assert np.array_equal(one, expected)
    chosen = best.infer(obs, best.rng(5))
    assert np.array_equal(chosen, drawn[int(scores(best, obs, drawn).argmax())].numpy())


def test_inpainted_chunks_are_picked_alike(untrained_run: Path) -> None:
    from aloe.policies.rtc import sample_inpainted

    best = ServedPolicy(load_run(untrained_run), best_of_n=3)
    obs = {"state": np.linspace(-0.5, 0.5, 39).astype(np.float32)}
    prefix = np.full((4, 4), 0.2, np.float32)
    state, row = best.chunks.inputs(obs)
    gen = best.rng(2)
    drawn = torch.stack(
        [
            sample_inpainted(best.chunks.actor, state, row, torch.as_tensor(prefix), 2, gen)
            for _ in range(3)
        ]
    )
    chosen = best.infer(obs, best.rng(2), (prefix, 2))
    assert np.array_equal(chosen, drawn[int(scores(best, obs, drawn).argmax())].numpy())


def test_best_of_n_flag_is_checked(untrained_run: Path) -> None:
    with pytest.raises(UsageError, match=r"--best-of-n \(0\): must be >= 1"):
        ServeArgs(run=untrained_run, best_of_n=0).validate()


def test_a_best_of_n_run_is_evaluated_and_served_as_it_acted(
    untrained_run: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(untrained_run, run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    config["aloe"] |= {"best_of_n": 3, "best_of_n_reduce": "mean"}
    (run_dir / "config.json").write_text(json.dumps(config))
    run = load_run(run_dir)
    acting = run.acting_policy(seed=0)
    assert isinstance(acting, BestOfNPolicy) and (acting.n, acting.reduce) == (3, "mean")
    assert isinstance(load_run(untrained_run).acting_policy(seed=0), FlowChunkPolicy)
    served = ServedPolicy(run)
    assert (served.best_of_n, served.reduce) == (3, "mean")

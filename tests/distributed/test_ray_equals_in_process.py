"""`aloe train --workers N` computes what in-process collection computes, bit for bit: the
same store (every episode row and every frame column) and the same metrics (losses,
evaluation, collection counts; only wall-clock times differ) for N = 1, 2, 3.

The collection rule is set so that several workers overshoot it: a success quota of 1 with
a budget of 3 episodes, so that 2 and 3 workers run episodes that are dropped, and each
worker's simulator and operator have a history that in-process collection never has.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("ray", reason="needs the ray extra: pip install 'aloe[ray]'")

from aloe.collect import CollectConfig  # noqa: E402
from aloe.config import preset  # noqa: E402
from aloe.datasets.store import EpisodeStore  # noqa: E402
from aloe.distributed.launch import train as train_on_workers  # noqa: E402
from aloe.distributed.options import Scale  # noqa: E402
from aloe.train import train as train_in_process  # noqa: E402

pytestmark = pytest.mark.slow


def tiny(out):
    """The smoke preset cut to one short iteration after the warm start."""
    cfg = preset("smoke")
    cfg.out, cfg.progress, cfg.iterations, cfg.eval_episodes = out, False, 1, 2
    cfg.bc_steps, cfg.aloe.critic_steps, cfg.aloe.actor_steps = 10, 10, 5
    cfg.collect = CollectConfig(success_quota=1, max_episodes=3, operator_max_steps=200)
    return cfg


def record(run):
    """(episode rows, every frame column, metrics rows without wall-clock times)."""
    store = EpisodeStore.open(run / "dataset")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    metrics = [{k: v for k, v in row.items() if not k.endswith("_s")} for row in rows]
    return store.episodes().to_pylist(), store.load_frames(), metrics


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("in-process") / "run"
    train_in_process(tiny(out))
    return record(out)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_n_workers_compute_what_in_process_collection_computes(
    local_ray, in_process, tmp_path, monkeypatch, workers
):
    remote = local_ray.remote  # 3 one-CPU actors do not fit the session's 2 CPUs: ask less
    monkeypatch.setattr(local_ray, "remote", lambda **kw: remote(**{**kw, "num_cpus": 0.5}))
    train_on_workers(tiny(tmp_path / "run"), False, Scale(workers=workers))
    rows, frames, metrics = record(tmp_path / "run")
    want_rows, want_frames, want_metrics = in_process
    assert [r["seed"] for r in rows] == [r["seed"] for r in want_rows]
    assert rows == want_rows
    assert frames.keys() == want_frames.keys()
    for key, column in want_frames.items():
        np.testing.assert_array_equal(frames[key], column, err_msg=key)
    assert json.dumps(metrics) == json.dumps(want_metrics)  # NaN == NaN, and exact floats

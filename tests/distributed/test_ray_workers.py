"""`aloe train --workers N`: the same episodes for any N, and a SIGKILLed worker loses nothing.

One local Ray (`ray.init(num_cpus=2)`, tests/distributed/conftest.py) for the session; the
smoke preset with one iteration after the warm start, and one 2-worker run shared by the
tests, keep the module to three short runs.
"""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

pytest.importorskip("ray", reason="needs the ray extra: pip install 'aloe[ray]'")

from aloe.config import preset  # noqa: E402
from aloe.data import EPISODE  # noqa: E402
from aloe.datasets.store import EpisodeStore  # noqa: E402
from aloe.distributed import workers as W  # noqa: E402
from aloe.distributed.launch import train  # noqa: E402
from aloe.distributed.options import Scale  # noqa: E402

pytestmark = pytest.mark.slow


def smoke(out, algo="aloe"):
    """The smoke preset, one iteration, fewer update steps: the episodes are the claim."""
    cfg = preset("smoke")
    cfg.iterations, cfg.out, cfg.progress, cfg.algo, cfg.bc_steps = 1, out, False, algo, 10
    cfg.aloe.critic_steps, cfg.aloe.actor_steps = 10, 5
    cfg.dagger.steps = 5
    return cfg


def episodes(run, iteration=None):
    """Every stored episode's row (seed, iteration, length, success, ...) and its frames;
    with `iteration`, the episodes up to it only (a prefix of the store)."""
    store = EpisodeStore.open(run / "dataset")
    rows = store.episodes().to_pylist()
    frames = store.load_frames()
    if iteration is not None:
        rows = [r for r in rows if r["iteration"] <= iteration]
        keep = frames[EPISODE] < len(rows)
        frames = {key: column[keep] for key, column in frames.items()}
    return rows, frames


def assert_same_episodes(a, b):
    (rows_a, frames_a), (rows_b, frames_b) = a, b
    assert [r["seed"] for r in rows_a] == [r["seed"] for r in rows_b]
    assert rows_a == rows_b
    assert frames_a.keys() == frames_b.keys()
    for key in frames_a:
        x, y = frames_a[key], frames_b[key]
        if x.dtype.kind == "f":
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=key)
        else:
            np.testing.assert_array_equal(x, y, err_msg=key)


@pytest.fixture(scope="module")
def two_workers(local_ray, tmp_path_factory):
    out = tmp_path_factory.mktemp("w2")
    history = train(smoke(out), False, Scale(workers=2))
    return out, history


def test_one_and_two_workers_collect_the_same_episodes(local_ray, two_workers, tmp_path):
    one = tmp_path / "w1"
    train(smoke(one), False, Scale(workers=1))
    two, history = two_workers
    assert len(history) == 2
    assert all(row["broadcast_s"] > 0 for row in history)  # logged in metrics.jsonl
    assert_same_episodes(episodes(one), episodes(two))
    rows, _ = episodes(two)
    assert {r["iteration"] for r in rows} == {0, 1}


def test_a_sigkilled_worker_loses_no_committed_episode(
    local_ray, two_workers, tmp_path, monkeypatch
):
    """Worker 1 is killed (SIGKILL) after the warm start's first commit, while it runs an
    episode: it is restarted, its episode re-run from its seed, and the run completes with
    the episodes of an unkilled run. BC (the warm start alone) keeps the run short."""
    pools = []
    start = W.WorkerPool.__init__

    def init(self, *args, **kwargs):
        start(self, *args, **kwargs)
        pools.append(self)
        self.on_commit = lambda k, i: (
            k == 0 and i == 1 and self.restarts == 0 and os.kill(self.slots[1].pid, signal.SIGKILL)
        )

    monkeypatch.setattr(W.WorkerPool, "__init__", init)
    out = tmp_path / "killed"
    history = train(smoke(out, algo="bc"), False, Scale(workers=2))
    assert pools[0].restarts >= 1
    assert len(history) == 1
    assert_same_episodes(episodes(out), episodes(two_workers[0], iteration=0))


def test_a_dead_worker_past_its_retries_stops_the_run_with_a_message(local_ray, monkeypatch):
    """Every remote call has a deadline: an episode that never answers is retried on fresh
    workers, then the run stops (RuntimeError) instead of hanging. Two tries, not three:
    each costs a worker start."""
    monkeypatch.setattr(W, "RETRIES", 2)
    cfg = smoke(None).resolved()
    pool = W.WorkerPool(cfg, workers=1, timeout=60)
    try:
        pool.timeout = 1e-3  # no episode answers this fast: each try is overdue

        class Store:
            def append(self, ep):  # pragma: no cover - never reached
                raise AssertionError("nothing is committed")

        with pytest.raises(RuntimeError, match="failed on 2 workers in a row"):
            pool.collect(0, cfg.collect, Store(), W.CollectStats(), progress=False)
    finally:
        pool.close()

"""`aloe train` end to end with cameras (`--obs image`) and with several tasks told apart by
frozen instruction embeddings (`--task a,b --instructions minilm`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aloe import data as D
from aloe.config import TrainConfig
from aloe.datasets.store import EpisodeStore
from aloe.observation import FEATURE_CACHE, Observations

pytest.importorskip("transformers")


def _train(out: Path, *extra: str) -> None:
    cmd = [
        sys.executable,
        "-m",
        "aloe.cli",
        "train",
        "--preset",
        "smoke",
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.render
def test_smoke_image_run_trains_on_cached_features(tmp_path: Path) -> None:
    out = tmp_path / "img"
    _train(out, "--obs", "image")
    cfg = TrainConfig.from_json((out / "config.json").read_text())
    assert cfg.obs == "image" and cfg.env.cameras == cfg.vision.cameras
    assert [r["iteration"] for r in _metrics(out)] == [0, 1, 2]
    store = EpisodeStore.open(out / "dataset")
    assert store.check() == [] and store.cameras == list(cfg.vision.cameras)
    key = D.image_key(cfg.vision.cameras[0])
    assert len(store.load_images(key)) == store.num_frames
    files = len(store.video_files(key))

    obs = Observations(cfg)
    frames = obs.frames(
        store,
        ["observation.state", "next.observation.state", "index", "episode_index", "task_index"],
    )
    assert obs.cache_stats == {"hits": files, "misses": 0}  # training filled the cache
    assert frames[D.STATE].shape == (store.num_frames, obs.dim) and obs.dim > 39
    first = frames[D.STATE][:, 39:].copy()

    cfg.vision.encoder = "cnn"  # another encoder: the cache is rebuilt, not reused
    other = Observations(cfg)
    again = other.frames(
        store,
        ["observation.state", "next.observation.state", "index", "episode_index", "task_index"],
    )
    assert other.cache_stats == {"hits": 0, "misses": files}
    assert again[D.STATE].shape[1] != first.shape[1] or not np.allclose(
        again[D.STATE][:, 39:], first
    )
    caches = [p for p in (store.root / FEATURE_CACHE).iterdir() if p.is_dir()]
    assert len(caches) == 1  # the old encoder's features were removed

    import aloe

    run = aloe.load_run(out)
    policy = run.chunk_policy()
    from aloe.envs.metaworld import TaskEnv

    env_obs, _ = TaskEnv(cfg.env).reset(seed=3)
    assert policy.act_chunk(env_obs).shape == (cfg.horizon, 4)


@pytest.mark.slow
def test_multitask_run_reports_success_per_task(tmp_path: Path) -> None:
    out = tmp_path / "mt"
    _train(out, "--task", "reach-v3,push-v3", "--instructions", "minilm", "--eval-episodes", "4")
    rows = _metrics(out)
    for row in rows:
        assert set(row["success_by_task"]) == {"reach-v3", "push-v3"}
        assert np.mean(list(row["success_by_task"].values())) == pytest.approx(row["success_rate"])
        assert set(row["steps_to_success_by_task"]) == {"reach-v3", "push-v3"}
    store = EpisodeStore.open(out / "dataset")
    assert len(store.tasks()) == 2 and store.sim_state_dim is None
    frames = store.load_frames(["task_index", D.SOURCE])
    demo_tasks = set(frames["task_index"][frames[D.SOURCE] == "demo"].tolist())
    assert demo_tasks == {0, 1}  # the warm start demonstrates every task
    assert (out / "dataset" / "cache" / "instructions.npz").is_file()
    from aloe.evaluation.report import build_run_report

    page = build_run_report(out).read_text()
    assert "Success per task" in page and "push-v3" in page

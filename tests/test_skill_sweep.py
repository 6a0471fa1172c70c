"""benchmarks/skill_sweep.py's reading of a comparison: the operator's correction success from
the runs' stores, each algorithm's final success, the table and the plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aloe.datasets.store import EpisodeStore
from tests.datasets.test_store import STORE_KW, make_episode
from tests.scripts import ROOT, load_script


@pytest.fixture(scope="module")
def sweep():
    return load_script(ROOT / "benchmarks" / "skill_sweep.py")


def fake_run(root: Path, name: str, seeds: list[int], finals: list[float], done: bool) -> Path:
    """A run directory: a store of make_episode(seed) (a policy fragment, then the operator's:
    one takeover; iteration seed % 3; success when seed is even) and its metrics."""
    run = root / "runs" / name
    store = EpisodeStore.create(run / "dataset", **STORE_KW)
    store.append([make_episode(s) for s in seeds])
    store.append([make_episode(7, fragments=("demo",))])  # iteration 1, no takeover: left out
    (run / "config.json").write_text(json.dumps({"algo": name.split("-")[0], "iterations": 1}))
    rows = [{"iteration": i, "success_rate": f} for i, f in enumerate(finals[: 2 if done else 1])]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def test_operator_success_counts_taken_over_episodes_after_the_warm_start(sweep, tmp_path):
    # seeds 0..5: iterations 0 1 2 0 1 2; taken over after the warm start: 1, 2, 4, 5, of
    # which 2 and 4 succeed
    a = fake_run(tmp_path, "dagger-s0", [0, 1, 2], [0.4, 0.6], done=True)
    b = fake_run(tmp_path, "dagger-s1", [3, 4, 5], [0.3, 0.9], done=True)
    rate, se, n = sweep.operator_success([a, b])
    assert (rate, n) == (0.5, 4)
    assert se == pytest.approx((0.5 * 0.5 / 4) ** 0.5)
    assert sweep.operator_success([]) == pytest.approx((float("nan"),) * 2 + (0,), nan_ok=True)


def test_rows_table_and_plot(sweep, tmp_path):
    fake_run(tmp_path / "human", "dagger-s0", [0, 1, 2], [0.4, 0.6], done=True)
    fake_run(tmp_path / "human", "dagger-s1", [3, 4, 5], [0.3, 0.9], done=True)
    fake_run(tmp_path / "human", "aloe-s0", [1, 2], [0.5, 0.7], done=False)  # unfinished
    dirs = {"human": tmp_path / "human", "clumsy": tmp_path / "missing"}
    rows = sweep.sweep_rows(dirs, ["aloe", "dagger"])
    assert rows[0]["dagger"] == [0.6, 0.9] and rows[0]["aloe"] == []
    assert rows[0]["operator_episodes"] == 6 and rows[1]["operator_episodes"] == 0
    md = sweep.table(rows, ["aloe", "dagger"])
    assert "| human | 0.50 ± 0.20 (6) | – | 0.75 ± 0.15 (0.60, 0.90) |" in md
    assert "| clumsy | – (0) | – | – |" in md
    sweep.plot(rows, ["aloe", "dagger"], tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").stat().st_size > 1000


def test_dir_arguments_are_checked(sweep, tmp_path):
    assert sweep.parse_dirs([f"human={tmp_path}"], ["human"]) == {"human": tmp_path}
    with pytest.raises(SystemExit, match="PROFILE=PATH"):
        sweep.parse_dirs(["expert=/x"], ["oracle", "human", "clumsy"])

"""The CLI as a user runs it: collect, dataset info/check, tasks, and clear errors."""

import json
import subprocess
import sys

import pytest

from aloe.datasets.store import EpisodeStore


def aloe(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "aloe.cli", *args], capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def test_help_and_tasks():
    assert "commands:" in aloe().stdout
    out = aloe("tasks").stdout
    assert "peg-insert-side-v3" in out and "insert the peg into the hole from the side" in out


@pytest.mark.slow
def test_collect_demos_then_takeovers_grow_one_store(tmp_path):
    d = tmp_path / "d"
    res = aloe("collect", "--task", "bin-picking-v3", "--episodes", "3", "--out", str(d),
               "--no-progress")  # fmt: skip
    assert res.returncode == 0, res.stderr
    info = aloe("dataset", "info", str(d)).stdout
    assert "episodes" in info and "demo" in info
    res = aloe("collect", "--task", "bin-picking-v3", "--episodes", "2", "--out", str(d),
               "--policy", "random", "--seed", "100", "--no-progress")  # fmt: skip
    assert res.returncode == 0, res.stderr
    stats = json.loads(res.stdout)
    assert stats["takeovers"] >= 2 and stats["human_steps"] > 0 and stats["policy_steps"] > 0
    store = EpisodeStore.open(d)
    assert store.num_episodes == 5
    summary = store.summary()
    assert summary["frames_by_source"]["policy"] > 0 and summary["frames_by_source"]["human"] > 0
    check = aloe("dataset", "check", str(d))
    assert check.returncode == 0 and check.stdout.startswith("ok")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--task", "peg-insert"], "unknown task 'peg-insert'"),
        (["--episodes", "0"], "--episodes must be >= 1"),
        (["--noise", "-1"], "--noise must be >= 0"),
        (["--policy", "nowhere"], "--policy must be 'random' or a run directory"),
    ],
)
def test_collect_refuses_bad_arguments_before_any_work(tmp_path, args, message):
    out = tmp_path / "d"
    res = aloe("collect", "--out", str(out), *args)
    assert res.returncode == 2 and message in res.stderr
    assert not out.exists()


def test_collect_refuses_a_foreign_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    res = aloe("collect", "--out", str(tmp_path), "--episodes", "1")
    assert res.returncode == 2 and str(tmp_path) in res.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_dataset_check_fails_on_a_foreign_directory(tmp_path):
    res = aloe("dataset", "check", str(tmp_path))
    assert res.returncode == 1

"""The CLI as a user runs it: collect, dataset info/check, tasks, and clear errors."""

import itertools
import json
import subprocess
import sys

import pyarrow as pa
import pytest

from aloe.cli import main
from aloe.cli_data import _continue_seeds
from aloe.datasets.store import EpisodeStore


def aloe(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "aloe.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def tree(root):
    """Every path under root with its bytes (None for a directory)."""
    return {p: None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


def test_help_and_tasks():
    assert "commands:" in aloe().stdout
    out = aloe("tasks").stdout
    assert "peg-insert-side-v3" in out and "insert the peg into the hole from the side" in out


@pytest.mark.slow
def test_collect_demos_then_takeovers_grow_one_store(tmp_path):
    d = tmp_path / "d"
    res = aloe(
        "collect", "--task", "bin-picking-v3", "--episodes", "3", "--out", str(d), "--no-progress"
    )
    assert res.returncode == 0, res.stderr
    demos = json.loads(res.stdout)
    assert "policy" not in demos and demos["operator"]["demonstrations"] == 3
    info = aloe("dataset", "info", str(d)).stdout
    assert "episodes" in info and "demo" in info
    res = aloe(
        "collect",
        "--task",
        "bin-picking-v3",
        "--episodes",
        "2",
        "--out",
        str(d),
        "--policy",
        "random",
        "--seed",
        "100",
        "--no-progress",
    )
    assert res.returncode == 0, res.stderr
    stats = json.loads(res.stdout)
    assert stats["operator"]["takeovers"] >= 2 and stats["operator"]["steps"] > 0
    assert stats["policy"]["steps"] > 0 and "demonstrations" not in stats["operator"]
    store = EpisodeStore.open(d)
    assert store.num_episodes == 5
    summary = store.summary()
    assert summary["frames_by_source"]["policy"] > 0 and summary["frames_by_source"]["human"] > 0
    check = aloe("dataset", "check", str(d))
    assert check.returncode == 0 and check.stdout.startswith("ok")


BAD_COLLECT = [
    (["--task", "peg-insert"], "--task ('peg-insert'): unknown task 'peg-insert' (did you mean"),
    (["--episodes", "0"], "--episodes (0): must be >= 1"),
    (["--seed", "-1"], "--seed (-1): must be in 0..2**31-1"),
    (["--max-steps", "0"], "--max-steps (0): must be >= 1"),
    (["--noise", "-1"], "--noise (-1.0): must be a finite number >= 0"),
    (["--noise", "inf"], "--noise (inf): must be a finite number >= 0"),
    (["--delay", "-1"], "--delay (-1): must be >= 0"),
    (["--patience", "-5"], "--patience (-5): must be >= 0 (0 = only on failure)"),
    (["--handback-steps", "-1"], "--handback-steps (-1): must be >= 0 (0 = the operator"),
    (["--policy", "nowhere"], "--policy (nowhere): does not exist; give 'random' or a run"),
    (["--out", "{tmp}/notes.txt"], "--out ({tmp}/notes.txt): is a file; give a directory"),
    (["--out", "{tmp}/notes.txt/d"], "--out ({tmp}/notes.txt/d): {tmp}/notes.txt is a file"),
    (["--out", "{tmp}/mine"], "--out ({tmp}/mine): is not empty and not an aloe store; give a"),
    (["--out", "/proc/d"], "--out (/proc/d): is under /proc, which holds no ordinary files"),
]


@pytest.mark.parametrize("args, message", BAD_COLLECT, ids=lambda a: " ".join(a))
def test_collect_refuses_bad_arguments_before_any_work(tmp_path, capsys, args, message):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("mine too")
    before = tree(tmp_path)
    args = [a.format(tmp=tmp_path) for a in args]
    argv = ["collect", "--out", str(tmp_path / "d"), "--no-progress", "--task", "reach-v3"]
    assert main([*argv, *args]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("aloe collect: error: " + message.format(tmp=tmp_path))
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert tree(tmp_path) == before  # no store, no build directory, nothing changed


def test_collect_refuses_a_store_that_records_other_columns(tmp_path, capsys):
    store = tmp_path / "x"
    EpisodeStore.create(store, fps=80, state_dim=39, action_dim=4, cameras={"corner": (64, 64)})
    before = tree(tmp_path)
    assert main(["collect", "--task", "reach-v3", "--out", str(store), "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        f"aloe collect: error: --out ({store}): the store records cameras ['corner'] at 64 px; "
        "this collection records none: use another --out\n"
    )
    assert tree(tmp_path) == before  # refused before any episode was recorded


def test_collect_continues_the_seeds_of_the_store(tmp_path, capsys):
    out = tmp_path / "d"
    argv = [
        "collect",
        "--task",
        "reach-v3",
        "--episodes",
        "1",
        "--seed",
        "5",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    assert "continuing" not in capsys.readouterr().err
    assert main(argv) == 0  # a restart of the same command: the next seed, not seed 5 again
    err = capsys.readouterr().err
    assert err == f"aloe collect: {out} holds 1 episode: continuing at episode 1, seed 6\n"
    assert EpisodeStore.open(out).episodes()["seed"].to_pylist() == [5, 6]


class _Store:
    def __init__(self, seeds):
        self.root, self.num_episodes = "s", len(seeds)
        self._meta = pa.table({"seed": pa.array(seeds, pa.int64())})

    def episodes(self):
        return self._meta

    def claim_seeds(self, start):  # the store's claims also skip seeds other collectors hold
        held = set(self._meta["seed"].to_pylist())
        return (s for s in itertools.count(start) if s not in held)


def test_continued_seeds_skip_those_the_store_holds(capsys):
    assert list(itertools.islice(_continue_seeds(_Store([]), 3, 2), 2)) == [3, 4]
    assert capsys.readouterr().err == ""
    assert list(itertools.islice(_continue_seeds(_Store([5, 6, None, 7]), 0, 3), 3)) == [4, 8, 9]
    assert capsys.readouterr().err == (
        "aloe collect: s holds 4 episodes: continuing at episode 4, seed 4; "
        "skipping seeds [5, 6, 7], which it holds already\n"
    )


def test_dataset_help_shows_both_positionals(capsys):
    for argv in (["dataset", "--help"], ["dataset", "check", "--help"], ["dataset", "info", "-h"]):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 0
        assert capsys.readouterr().out.startswith(
            "usage: aloe dataset [-h] [OPTIONS] {info,check,inspect} PATH"
        )


def test_dataset_check_reports_problems_on_stderr(tmp_path, capsys):
    store = EpisodeStore.create(tmp_path / "s", fps=10, state_dim=4, action_dim=2)
    assert main(["dataset", "check", str(store.root)]) == 0
    assert capsys.readouterr() == ("ok: 0 episodes, 0 frames\n", "")
    orphan = store.root / "data/chunk-000/file-000.parquet"
    orphan.parent.mkdir()
    orphan.write_bytes(b"left by a crash")
    assert main(["dataset", "check", str(store.root)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err == (
        f"aloe dataset: error: {orphan}: orphan: no episode references it (an append that "
        "never committed left it; the next append removes it)\n"
    )


def test_dataset_refuses_a_path_that_holds_no_store(tmp_path, capsys):
    (tmp_path / "run" / "dataset").mkdir(parents=True)
    EpisodeStore.create(tmp_path / "run" / "dataset", fps=10, state_dim=4, action_dim=2)
    (tmp_path / "notes.txt").write_text("mine")
    cases = {
        tmp_path / "nowhere": "does not exist; give a store written by `aloe collect`",
        tmp_path / "notes.txt": "is a file; give a store written by `aloe collect`",
        tmp_path: "is not an aloe store (no meta/info.json); give a store written by",
        tmp_path / "run": f"is not an aloe store (no meta/info.json); did you mean "
        f"{tmp_path / 'run' / 'dataset'}?",
    }
    for path, message in cases.items():
        for action in ("info", "check"):
            assert main(["dataset", action, str(path)]) == 2
            out, err = capsys.readouterr()
            assert out == "" and err.startswith(f"aloe dataset: error: PATH ({path}): {message}")
            assert len(err.splitlines()) == 1


def test_dataset_check_fails_on_a_damaged_store(tmp_path, capsys):
    store = EpisodeStore.create(tmp_path / "s", fps=10, state_dim=4, action_dim=2)
    (store.root / "meta/info.json").write_text("{not json")
    assert main(["dataset", "check", str(store.root)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"aloe dataset: error: {store.root}/meta/info.json: ")


def test_help_lists_every_command_on_one_line(capsys):
    from aloe.cli import COMMANDS

    assert main(["--help"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name, command in COMMANDS.items():
        assert sum(line.split()[:1] == [name] and command.summary in line for line in lines) == 1
    assert any(line.startswith("`aloe train --resume DIR` continues a run") for line in lines)
    assert max(map(len, lines)) <= 80


def test_unknown_command_names_every_command(capsys):
    from aloe.cli import COMMANDS

    assert main(["trian"]) == 2
    assert capsys.readouterr().err == (
        f"aloe: error: unknown command ('trian'): one of {', '.join(COMMANDS)}\n"
    )


@pytest.mark.parametrize("argv", [["train", "--help"], ["train", "--resume", "somewhere", "-h"]])
def test_train_help_shows_resume(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "aloe train --resume DIR [--device D] [--progress | --no-progress]" in out
    assert "--preset" in out and list(tmp_path.iterdir()) == []

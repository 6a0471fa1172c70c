"""The read-side commands (eval, plot-q, collect --policy, report, compare, bench): bad input
is one line on stderr naming the value, exit 2, nothing created or changed; and a damaged
latest checkpoint is skipped, not fatal. (tests/test_bad_inputs.py holds the common table.)"""

from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path

import pytest

from aloe import checkpoint
from aloe.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory with two checkpoints of an untrained smoke learner (no training)."""
    from aloe.config import preset
    from aloe.run import build_learner

    cfg = preset("smoke")
    cfg.out = tmp_path_factory.mktemp("runs") / "run"
    cfg = cfg.resolved()
    cfg.out.mkdir()
    (cfg.out / "config.json").write_text(cfg.to_json())
    learner = build_learner(cfg)
    for k in (0, 1):
        state = {"learner": learner.state_dict(), "history": [{"iteration": i} for i in range(k)]}
        checkpoint.save(cfg.out / "checkpoints", k, state)
    return cfg.out


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
    }


def _comparison(root: Path, summary: str | None = None) -> Path:
    (root / "runs").mkdir(parents=True)
    (root / "compare.json").write_text('{"algos": ["aloe"]}')
    if summary is not None:
        (root / "summary.json").write_text(summary)
    return root


CASES = [
    # (argv with {run} {tmp}, text the one line must hold)
    ("eval --run {run} --ope-pairs -1", "--ope-pairs (-1): must be >= 0"),
    ("eval --run {run} --ope-rollouts 0", "--ope-rollouts (0): must be >= 1"),
    ("eval --run {run} --suite full --ope-rollouts 0", "--ope-rollouts (0): must be >= 1"),
    ("eval --run {tmp}/nowhere --episodes 0", "--episodes (0): must be >= 1"),
    ("eval --run {tmp}/nowhere", "--run ({tmp}/nowhere): does not exist"),
    ("plot-q --run {run} --seed -1", "--seed (-1): must be >= 0"),
    ("plot-q --run {run}", "--run ({run}): its dataset is unreadable"),
    ("collect --policy {tmp} --out {tmp}/d", "--policy ({tmp}): not a run directory"),
    ("report {tmp}/cmp", "comparison ({tmp}/cmp): has no runs under runs/ and no summary.json"),
    ("report {tmp}/bad", "comparison ({tmp}/bad): summary.json is unreadable"),
    (
        "compare --preset smoke --out {tmp}/c --train-args=--aloe.beta=-1",
        "--train-args ('--aloe.beta=-1'): config field aloe.beta (-1.0): must be > 0",
    ),
    (
        "compare --preset smoke --out {tmp}/c --train-args '--aloe.beta -1'",
        "must be attached with '=': --train-args='--aloe.beta -1'",
    ),
    (
        "compare --preset smoke --out {tmp}/c --train-args=--seed=3",
        "--train-args ('--seed=3'): --seed=3 is set by compare for each run",
    ),
    ("compare --preset smoke --out {tmp}/c --train-args=--iterations=x", "--iterations ('x')"),
    ('compare --preset smoke --out {tmp}/c "--train-args=--task \'x"', "No closing quotation"),
    ("compare --preset smoke --out {tmp}/brk", "--out ({tmp}/brk): compare.json is unreadable"),
    ("bench --steps 100000000000", "--steps (100000000000): the collected frames need about"),
    ("bench --horizon 2000", "--horizon (2000) with --batch-size (256): one update step needs"),
    ("bench --out {tmp}/no/figures.json", "--out ({tmp}/no/figures.json): its directory does"),
    ("bench --task mt10", "--task ('mt10'): name one task"),
]


@pytest.mark.parametrize("argv, shows", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(run, tmp_path, monkeypatch, capsys, argv, shows):
    monkeypatch.chdir(tmp_path)
    _comparison(tmp_path / "cmp")
    _comparison(tmp_path / "bad", summary="{")
    (tmp_path / "brk").mkdir()
    (tmp_path / "brk" / "compare.json").write_text("[")
    places = {"run": str(run), "tmp": str(tmp_path)}
    before = {**_snapshot(tmp_path), **_snapshot(run)}
    assert main(shlex.split(argv.format(**places))) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"aloe {argv.split()[0]}: error: ") and shows.format(**places) in err
    assert {**_snapshot(tmp_path), **_snapshot(run)} == before


def test_eval_falls_back_past_a_truncated_latest_checkpoint(run, tmp_path, capsys):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    latest = copy / "checkpoints" / "iter-0001"
    tensors = latest / checkpoint.TENSORS
    data = tensors.read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")  # safetensors: length, JSON, data
    tensors.write_bytes(data[:1000])
    assert main(["eval", "--run", str(copy), "--episodes", "1"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["iteration"] == 0
    skip = [line for line in out.err.splitlines() if line.startswith("aloe: skipping")]
    assert skip == [
        f"aloe: skipping checkpoint {latest}: {checkpoint.TENSORS} is truncated "
        f"(1000 of at least {header_end} bytes); using iter-0000"
    ]
    assert tensors.stat().st_size == 1000  # kept as it was


def test_compare_train_args_reach_the_runs_as_given(tmp_path):
    from aloe.compare import CompareArgs, train_config
    from aloe.compare_dir import RunSpec

    args = CompareArgs(out=tmp_path, preset="smoke", train_args="--iterations 1 --aloe.beta 7")
    cfg = train_config(args, RunSpec("awr", 2, tmp_path))
    assert (cfg.iterations, cfg.aloe.beta, cfg.algo, cfg.seed) == (1, 7.0, "awr", 2)
    assert cfg.out == tmp_path / "runs" / "awr-s2" and not cfg.progress

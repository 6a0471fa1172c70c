"""Every command refuses bad input the same way (issue 10): exit 2, one line on stderr,
`aloe CMD: error: <what> (<value>): <allowed>`, no traceback, and the file system as it was.

The table runs the CLI in-process (`aloe.cli.main`); a few cases run it as a user does, in a
subprocess, to prove that no traceback reaches a terminal.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from aloe.cli import COMMANDS, main

CASE_SECONDS = 30  # a refusal takes well under a second; more means the input was accepted


@dataclass(frozen=True)
class Case:
    argv: str
    """The command line after `aloe`, with placeholders: {run} and {store} (the fixtures),
    {copy} (this test's copy of the run, after `damage`), {file} (a text file), {empty}
    (an empty directory), {foreign} (a directory holding a user's file), {missing}."""
    shows: tuple[str, ...]
    """What the one line must name (the offending value), with the same placeholders."""
    damage: Callable[[Path], None] | None = None
    """Applied to {copy} before the command runs."""


def config(key: str, value: Any) -> Callable[[Path], None]:
    """Set one (dotted) field of the run's config.json."""

    def damage(run: Path) -> None:
        cfg = json.loads((run / "config.json").read_text())
        *parents, last = key.split(".")
        node = cfg
        for name in parents:
            node = node[name]
        node[last] = value
        (run / "config.json").write_text(json.dumps(cfg, indent=1))

    return _named(damage, f"config.json {key}={value!r}")


def append(relpath: str, text: str) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        with open(run / relpath, "a") as f:
            f.write(text)

    return _named(damage, f"{relpath} + {text.strip()!r}")


def truncate_checkpoints(name: str) -> Callable[[Path], None]:
    """Cut `name` to half its size in every checkpoint: nothing complete to fall back to."""

    def damage(run: Path) -> None:
        files = list((run / "checkpoints").glob(f"*/{name}"))
        assert files, f"the fixture run has no checkpoint {name}"
        for f in files:
            os.truncate(f, f.stat().st_size // 2)

    return _named(damage, f"{name} truncated")


def remove(relpath: str) -> Callable[[Path], None]:
    return _named(lambda run: shutil.rmtree(run / relpath), f"no {relpath}")


def _named(damage: Callable[[Path], None], name: str) -> Callable[[Path], None]:
    damage.__qualname__ = name
    return damage


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")

CASES: list[Any] = [
    # tasks, and the program itself
    Case("tasks --verify x", ("'x'",)),
    Case("tasks --nope", ("--nope",)),
    Case("nope", ("'nope'",)),
    # collect
    Case("collect --episodes x", ("--episodes", "'x'")),
    Case("collect --episodes", ("--episodes",)),
    Case("collect --episodes 0", ("--episodes", "0")),
    Case("collect --episodes -3", ("--episodes", "-3")),
    Case("collect --seed -1", ("--seed", "-1")),
    Case("collect --task peg-insert", ("peg-insert",)),
    Case("collect --noise -1", ("--noise", "-1")),
    Case("collect --noise nan", ("--noise", "nan")),
    Case("collect --noise inf", ("--noise", "inf")),
    Case("collect --delay -2", ("--delay", "-2")),
    Case("collect --profile robot", ("--profile", "'robot'")),
    Case("collect --patience -5", ("--patience", "-5")),
    Case("collect --handback-steps -1", ("--handback-steps", "-1")),
    Case("collect --max-steps 0", ("--max-steps", "0")),
    Case("collect --out {file}", ("{file}",)),
    Case("collect --out {foreign}", ("{foreign}",)),
    Case("collect --out {run}", ("{run}",)),
    Case("collect --out /proc/aloe-store", ("/proc/aloe-store",)),
    Case("collect --policy nowhere", ("nowhere",)),
    Case("collect --policy {empty}", ("{empty}",)),
    Case("collect --policy {store}", ("{store}",)),
    Case("collect --policy {copy}", ("{copy}",), truncate_checkpoints("tensors.safetensors")),
    Case("collect --policy {copy}", ("-5",), config("aloe.beta", -5)),
    Case("collect stray", ("'stray'",)),
    # dataset
    Case("dataset", ("ACTION",)),
    Case("dataset nope {store}", ("'nope'",)),
    Case("dataset info", ("ROOT",)),
    Case("dataset info {missing}", ("{missing}",)),
    Case("dataset check {missing}", ("{missing}",)),
    Case("dataset info {file}", ("{file}",)),
    Case("dataset check {file}", ("{file}",)),
    Case("dataset info {empty}", ("{empty}",)),
    Case("dataset info {run}", ("{run}",)),
    Case("dataset inspect {missing}", ("PATH", "{missing}")),
    Case("dataset inspect {empty}", ("PATH", "{empty}", "no meta/info.json")),
    Case("dataset inspect {file}", ("PATH", "{file}")),
    Case("dataset inspect {store} --task nope", ("'nope'",)),
    # train
    Case("train --iterations abc", ("--iterations", "'abc'")),
    Case("train --iterations 1.5", ("--iterations", "'1.5'")),
    Case("train --iterations -1", ("iterations", "-1")),
    Case("train --seed -1", ("seed", "-1")),
    Case("train --device foo", ("'foo'",)),
    pytest.param(Case("train --device cuda", ("'cuda'",)), marks=NO_CUDA, id="train --device cuda"),
    Case("train --aloe.beta inf", ("beta", "inf")),
    Case("train --aloe.beta nan", ("beta", "nan")),
    Case("train --aloe.beta -5", ("beta", "-5")),
    Case("train --aloe.beta x", ("--aloe.beta", "'x'")),
    Case("train --optim.q-abs-max nan", ("q_abs_max", "nan")),
    Case("train --algo awr --aloe.beta 3", ("--aloe.beta", "--algo aloe")),
    Case("train --algo dagger --critic.num-q 3", ("--critic.num-q", "--algo dagger")),
    Case("train --aloe.target-reduce max", ("'max'",)),
    Case("train --exec-horizon 999", ("exec_horizon", "999")),
    Case("train --horizon 0", ("horizon", "0")),
    Case("train --eval-episodes 0", ("eval_episodes", "0")),
    # absurd sizes: a bound named, not a run that never ends or overflows
    Case("train --iterations 1e20", ("--iterations", "'1e20'")),
    Case("train --iterations 100000000000000000000", ("iterations", "<= 1000000000")),
    Case("train --env.max-steps 1e20", ("--env.max-steps", "'1e20'")),
    Case("train --env.max-steps 100000000000000000000", ("env.max_steps", "<= 1000000000")),
    Case("train --env.max-steps 100001", ("env.max_steps", "100001", "<= 100000")),
    Case("train --collect.max-episodes 10001", ("max_episodes", "10001", "<= 10000")),
    Case("train --num-demos 4000", ("num_demos", "4000", "<= 3333")),
    Case("train --aloe.critic-steps 99999999999", ("critic_steps", "<= 1000000000")),
    Case("train --seed -99999999999", ("seed", ">= -1000000000")),
    Case("train --algo foo", ("'foo'",)),
    Case("train --algo", ("--algo",)),
    Case("train --preset nope", ("'nope'",)),
    Case("train --task nope", ("'nope'",)),
    Case("train --obs video", ("'video'",)),
    Case("train --obs image --vision.cameras nope", ("'nope'",)),
    Case("train --collect.handback-steps -1", ("handback_steps", "-1")),
    Case("train --operator.patience -5", ("patience", "-5")),
    Case("train --operator.noise-std nan", ("noise_std", "nan")),
    Case("train --operator.profile robot", ("operator.profile", "'robot'")),
    Case("train --operator.human.reaction-steps -1", ("reaction_steps", "-1")),
    Case("train --operator.human.drop-prob 1.5", ("drop_prob", "1.5")),
    Case("train --out {file}", ("{file}",)),
    Case("train --out /proc/aloe-run", ("/proc/aloe-run",)),
    Case("train --out {run}", ("{run}",)),
    Case("train --nope 1", ("--nope",)),
    Case("train --iteration 3", ("--iteration", "--iterations")),
    Case("train --demos {missing}", ("--demos", "{missing}", "does not exist")),
    Case("train --demos {file}", ("--demos", "{file}", "is a file")),
    Case("train --demos {empty}", ("--demos", "{empty}", "no meta/info.json")),
    Case("train --demos {store} --demos-map.action act", ("--demos-map.action", "'act'")),
    Case("train --demos {store} --horizon 60", ("--demos", "--horizon 60")),
    Case("train --demos {run} --obs image", ("--demos-map.cameras", "observation.images.corner")),
    Case("train --demos {store} --demos-map.state ''", ("demos_map.state", "''")),
    # train --resume
    Case("train --resume {missing}", ("{missing}",)),
    Case("train --resume {empty}", ("{empty}",)),
    Case("train --resume {file}", ("{file}",)),
    Case("train --resume {store}", ("{store}",)),
    Case("train --resume {run} --iterations 3", ("--iterations",)),
    Case("train --resume {run} --device foo", ("'foo'",)),
    Case("train --resume {copy}", ("-5",), config("aloe.beta", -5)),
    Case("train --resume {copy}", ("'foo'",), config("algo", "foo")),
    Case("train --resume {copy}", ("'abc'",), config("iterations", "abc")),
    Case("train --resume {copy}", ("horizon", "-1"), config("horizon", -1)),
    Case("train --resume {copy}", ("exec_horizon", "999"), config("exec_horizon", 999)),
    Case("train --resume {copy}", ("beta", "inf"), config("aloe.beta", "inf")),
    Case("train --resume {copy}", ("nope",), config("nope", 1)),
    Case("train --resume {copy}", ("{copy}/config.json",), append("config.json", "\n}\n")),
    # eval
    Case("eval", ("--run",)),
    Case("eval --run {missing}", ("{missing}",)),
    Case("eval --run {empty}", ("{empty}",)),
    Case("eval --run {file}", ("{file}",)),
    Case("eval --run {store}", ("{store}",)),
    Case("eval --run {run} --suite nope", ("--suite", "'nope'")),
    Case("eval --run {run} --episodes 0", ("--episodes", "0")),
    Case("eval --run {run} --episodes x", ("--episodes", "'x'")),
    Case("eval --run {run} --seed -1", ("--seed", "-1")),
    Case("eval --run {run} --suite full --action-ope-states -1", ("--action-ope-states", "-1")),
    Case("eval --run {run} --suite full --action-ope-chunks 0", ("--action-ope-chunks", "0")),
    Case("eval --run {run} --suite full --action-ope-rollouts 0", ("--action-ope-rollouts", "0")),
    Case(
        "eval --run {run} --suite action-ope --action-ope-states 0",
        ("--action-ope-states", "0", ">= 1 with --suite action-ope"),
    ),
    Case("eval --run {copy}", ("{copy}",), remove("checkpoints")),
    Case("eval --run {copy}", ("{copy}",), truncate_checkpoints("tensors.safetensors")),
    Case("eval --run {copy}", ("{copy}",), truncate_checkpoints("state.json")),
    Case("eval --run {copy}", ("{copy}/config.json",), append("config.json", "\n}\n")),
    Case("eval --run {copy}", ("exec_horizon", "999"), config("exec_horizon", 999)),
    # plot-q
    Case("plot-q --run {missing}", ("{missing}",)),
    Case("plot-q --run {empty}", ("{empty}",)),
    Case("plot-q --run {store}", ("{store}",)),
    Case("plot-q --run {run} --episode 99", ("--episode", "99")),
    Case("plot-q --run {run} --episode -1", ("--episode", "-1")),
    Case("plot-q --run {run} --episode x", ("--episode", "'x'")),
    Case("plot-q --run {run} --episode 0 --rollout", ("--rollout",)),
    Case("plot-q --run {run} --out {empty}", ("{empty}",)),
    Case("plot-q --run {run} --out q.jpg", ("--out", "q.jpg", ".png")),
    Case("plot-q --run {copy}", ("{copy}",), truncate_checkpoints("tensors.safetensors")),
    # bench
    Case("bench --steps 0", ("--steps", "0")),
    Case("bench --steps abc", ("--steps", "'abc'")),
    Case("bench --batch-size -1", ("--batch-size", "-1")),
    Case("bench --horizon 0", ("--horizon", "0")),
    Case("bench --batch-size 100000000 --horizon 100000", ("100000000",)),
    Case("bench --task nope", ("'nope'",)),
    Case("bench --out {empty}", ("{empty}",)),
    Case("bench --nope 1", ("--nope",)),
    # compare (smoke settings: cheap even if a case were wrongly accepted)
    Case("compare --preset smoke --seeds 1 --algos foo", ("'foo'",)),
    Case("compare --preset smoke --seeds 0", ("--seeds", "0")),
    Case("compare --preset smoke --seeds 1 --jobs 0", ("--jobs", "0")),
    Case("compare --preset smoke --seeds 1 --action-ope-states -1", ("--action-ope-states", "-1")),
    Case(
        "compare --preset smoke --seeds 1 --action-ope-rollouts 0", ("--action-ope-rollouts", "0")
    ),
    Case("compare --preset nope --seeds 1", ("'nope'",)),
    Case("compare --preset smoke --seeds 1 --task nope", ("'nope'",)),
    Case("compare --preset smoke --seeds 1 --out {foreign}", ("{foreign}",)),
    Case("compare --preset smoke --seeds 1 --out {file}", ("{file}",)),
    Case("compare --preset smoke --seeds 1 --train-args '--aloe.beta -1'", ("-1",)),
    Case("compare --preset smoke --seeds 1 --train-args '--nope 1'", ("--nope",)),
    Case("compare --preset smoke --seeds 1 --train-args=--aloe.beta=-1", ("-1",)),
    Case("compare --preset smoke --seeds 1 --train-args=--nope", ("--nope",)),
    Case("compare --seeds x", ("--seeds", "'x'")),
    # report
    Case("report", ("DIR",)),
    Case("report {missing}", ("{missing}",)),
    Case("report {file}", ("{file}",)),
    Case("report {empty}", ("{empty}",)),
    Case("report {foreign}", ("{foreign}",)),
    Case("report {store}", ("{store}",)),
]

SUBPROCESS_CASES = [
    Case("train --iterations abc", ("--iterations", "'abc'")),
    Case("eval --run {empty}", ("{empty}",)),
    Case("collect --policy {copy}", ("{copy}",), truncate_checkpoints("state.json")),
]


def _id(case: Any) -> str:
    if not isinstance(case, Case):
        return str(case.id)
    return case.argv + (f" [{case.damage.__qualname__}]" if case.damage else "")


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A one-episode store and a tiny trained run, built once; tests never change them."""
    root = tmp_path_factory.mktemp("fixtures")
    store, run = root / "store", root / "run"
    argv = f"collect --episodes 1 --max-steps 50 --out {store} --no-progress"
    assert main(argv.split()) == 0
    argv = (
        "train --preset smoke --operator.profile oracle --iterations 0 --bc-steps 5 --eval-episodes 1 --num-demos 1 "
        "--env.max-steps 70 --actor.num-flow-steps 1 --exec-horizon 10 --actor.hidden-dim 32 "
        f"--actor.num-layers 1 --critic.hidden-dim 32 --critic.num-layers 1 --out {run} "
        "--no-progress"
    )
    assert main(argv.split()) == 0
    return {"store": store, "run": run}


def _places(tmp_path: Path, fixtures: dict[str, Path], case: Case) -> dict[str, str]:
    """The placeholders' paths; creates this test's own files under tmp_path."""
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "empty").mkdir()
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "thesis.tex").write_text("mine too")
    places = {name: str(path) for name, path in fixtures.items()}
    places |= {
        "file": str(tmp_path / "notes.txt"),
        "empty": str(tmp_path / "empty"),
        "foreign": str(tmp_path / "foreign"),
        "missing": str(tmp_path / "nowhere"),
    }
    if "{copy}" in case.argv:
        copy = tmp_path / "copy"
        shutil.copytree(fixtures["run"], copy)
        if case.damage is not None:
            case.damage(copy)
        places["copy"] = str(copy)
    return places


def _snapshot(*roots: Path) -> dict[str, str]:
    """Every path under roots: a file's sha256, or `dir`."""
    seen = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            digest = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
            seen[str(path)] = digest
    return seen


class _Accepted(BaseException):
    """The command was still working after CASE_SECONDS: it accepted the bad input."""


@pytest.fixture
def time_limit() -> Iterator[None]:
    def stop(*_: Any) -> None:
        raise _Accepted

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(CASE_SECONDS)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _run_in_process(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as e:  # tyro's own error box
        code = e.code if isinstance(e.code, int) else 1
    except _Accepted:
        pytest.fail(f"still running after {CASE_SECONDS} s: the bad input was accepted")
    except Exception as e:  # what a user would have seen as a traceback
        pytest.fail(f"Traceback: {type(e).__name__}: {e}")
    return code, capsys.readouterr().err


def _check_refusal(case: Case, argv: list[str], code: int, err: str, places: dict[str, str]):
    command = "aloe" if argv[0] == "nope" else f"aloe {argv[0]}"
    assert "Traceback" not in err, err
    assert code == 2, f"exit {code}; stderr: {err[-3000:]}"
    lines = err.splitlines()
    assert len(lines) == 1, f"{len(lines)} lines on stderr:\n{err[-3000:]}"
    assert lines[0].startswith(f"{command}: error: "), lines[0]
    for shown in case.shows:
        assert shown.format(**places) in lines[0], f"{shown!r} not named in: {lines[0]}"


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_bad_input_is_one_line_and_changes_nothing(
    case: Case, fixtures, tmp_path, monkeypatch, capsys, time_limit
):
    monkeypatch.chdir(tmp_path)
    places = _places(tmp_path, fixtures, case)
    before = _snapshot(tmp_path, *fixtures.values())
    argv = shlex.split(case.argv.format(**places))
    code, err = _run_in_process(argv, capsys)
    _check_refusal(case, argv, code, err, places)
    after = _snapshot(tmp_path, *fixtures.values())
    changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    assert not changed, f"created or changed: {changed}"


@pytest.mark.parametrize("case", SUBPROCESS_CASES, ids=_id)
def test_no_traceback_reaches_a_user(case: Case, fixtures, tmp_path):
    places = _places(tmp_path, fixtures, case)
    before = _snapshot(tmp_path, *fixtures.values())
    argv = shlex.split(case.argv.format(**places))
    res = subprocess.run(
        [sys.executable, "-m", "aloe.cli", *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    _check_refusal(case, argv, res.returncode, res.stderr, places)
    assert _snapshot(tmp_path, *fixtures.values()) == before


def test_a_reader_that_leaves_early_ends_aloe_quietly(tmp_path):
    """`aloe tasks | head`: stdout closed before aloe writes; a user's stdout is buffered."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "aloe.cli", "tasks"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before aloe has even imported
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 0 and err == ""


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_still_prints_in_full(command, capsys):
    with pytest.raises(SystemExit) as exit:
        main([command, "--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: aloe {command}" in out and "--help" in out

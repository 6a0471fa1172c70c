"""The learner on two processes (torchrun, gloo on CPU): each trains on half of the global
batch with gradients averaged, and the losses are one process's; a resumed two-process run
equals an uninterrupted one; a run that cannot be sharded is refused before torchrun starts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--algo", "ppo-sbc"],
            "--learner-procs (2): algo ppo-sbc trains on one process; use one of aloe, dagger, bc",
        ),
        (
            ["--optim.batch-size", "33"],
            "config field optim.batch_size (33): must be a multiple of the 2 learner processes",
        ),
    ],
)
def test_a_run_the_learner_cannot_shard_is_refused_before_torchrun(
    tmp_path, capsys, flags, message
):
    from aloe.cli import main

    out = tmp_path / "run"
    code = main(["train", "--preset", "smoke", "--out", str(out), "--learner-procs", "2", *flags])
    assert code == 2 and not out.exists()
    assert capsys.readouterr().err.strip() == f"aloe train: error: {message}"


@pytest.mark.slow
def test_two_gloo_processes_give_one_process_losses(tmp_path):
    sys.path.insert(0, str(HERE))
    try:
        from ddp_losses import losses
    finally:
        sys.path.remove(str(HERE))
    one = losses()
    two = json.loads(_torchrun_losses(tmp_path / "two.json").read_text())
    assert two.keys() == one.keys()
    for name in one:
        assert two[name] == pytest.approx(one[name], rel=1e-5, abs=1e-6), name


def _torchrun_losses(out: Path) -> Path:
    """ddp_losses.py on two gloo processes. Once in CI (stop 27, torch 2.13) a rank aborted
    in gloo's C++ teardown ("terminate called without an active exception", SIGABRT) after
    the losses were computed; not reproduced in 8 local runs. That abort alone is retried,
    once, from scratch; any other failure, or the abort twice, fails the test."""
    cmd = [*TORCHRUN, str(HERE / "ddp_losses.py"), str(out)]
    for attempt in range(2):
        out.unlink(missing_ok=True)
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if run.returncode == 0:
            return out
        if attempt == 1 or "terminate called without an active exception" not in run.stderr:
            break
    raise AssertionError(f"torchrun exited {run.returncode}:\n{run.stderr[-4000:]}")


def _train(*args: str) -> None:
    cmd = [sys.executable, "-m", "aloe.cli", "train", *args, "--learner-procs", "2"]
    subprocess.run(cmd, check=True, timeout=900)


def _metrics(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "wall_s"} for row in rows]


@pytest.mark.slow
def test_a_resumed_two_process_run_equals_an_uninterrupted_one(tmp_path, same_metrics):
    """The run is cut after iteration 1's collection (its checkpoint and metrics row
    removed, its episodes kept), as a driver killed during the update leaves it."""
    whole = tmp_path / "whole"
    _train(
        "--preset",
        "smoke",
        "--iterations",
        "1",
        "--eval-episodes",
        "1",
        "--bc-steps",
        "10",
        "--aloe.critic-steps",
        "10",
        "--aloe.actor-steps",
        "5",
        "--out",
        str(whole),
        "--no-progress",
    )
    cut = tmp_path / "cut"
    shutil.copytree(whole, cut)
    shutil.rmtree(cut / "checkpoints" / "iter-0001")
    lines = (cut / "metrics.jsonl").read_text().splitlines()
    (cut / "metrics.jsonl").write_text(lines[0] + "\n")
    _train("--resume", str(cut), "--no-progress")
    assert len(_metrics(whole)) == 2
    same_metrics(_metrics(cut), _metrics(whole))

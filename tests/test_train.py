"""End-to-end runs of `aloe train` (smoke preset): metrics, checkpoints, resume after kill -9."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from aloe import checkpoint
from aloe.config import TrainConfig, preset

pytestmark = pytest.mark.slow

METRIC_KEYS = {
    "iteration",
    "success_rate",
    "mean_steps_to_success",
    "env_steps",
    "human_steps",
    "takeovers",
    "episodes",
    "critic_loss",
    "q_pess_mean",
    "advantage_mean",
    "weight_mean",
    "weight_clipped_frac",
    "wall_s",
}


def _train(out, *extra):
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
    return subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )


def _default_sigint() -> None:
    """SIGINT as a terminal's foreground command has it: a test run started in the background
    (`cmd &` without job control) hands its children SIGINT ignored, and Python then installs
    no KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _metrics(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        row.pop("wall_s")
    return rows


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """`aloe train --preset smoke` as a user runs it, its stderr captured: not a terminal
    (saved as train.log beside the run)."""
    out = tmp_path_factory.mktemp("runs") / "smoke"
    cmd = [sys.executable, "-m", "aloe.cli", "train", "--preset", "smoke", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    (out.parent / "train.log").write_text(proc.stderr + proc.stdout)
    return out


def test_a_captured_log_has_lines_not_bar_frames_and_ends_with_the_summary(smoke_run):
    log = (smoke_run.parent / "train.log").read_text()
    assert "\r" not in log and "\x1b[" not in log  # no bar frames, no cursor movement
    lines = log.splitlines()
    assert lines[0] == f"aloe train: {smoke_run}: ALOE on pick-place-v3, preset smoke, seed 0"
    assert lines[1].startswith("  iteration 0    2 operator demonstrations → 40 BC steps")
    assert lines[2].startswith("  iterations 1–2 collect (π acts, the operator takes over")
    assert lines[3].startswith("  estimate       about 1 min (the smoke preset's measured")
    assert f"`aloe train --resume {smoke_run}`" in lines[4]
    assert "  bc warm start: 40 steps …" in lines and "  critic[2]: 20 steps …" in lines
    assert "  bc warm start: 40 steps in " in log and "  critic[2]: 20 steps in " in log
    assert [line.split(":")[0] for line in lines if line.startswith("iteration ")] == [
        "iteration 0/2",
        "iteration 1/2",
        "iteration 2/2",
    ]
    summary = lines[lines.index(next(x for x in lines if x.startswith("aloe train: finished"))) :]
    assert summary[0] == (
        f"aloe train: finished {smoke_run}: aloe on pick-place-v3, preset "
        "smoke, 2 iterations after the BC warm start"
    )
    labels = [line.split()[0] for line in summary[1:]]
    assert labels == [
        "success",
        "BC",
        "operator",
        "wall",
        "report",
        "checkpoint",
        "TensorBoard",
        "metrics",
    ]
    assert f"  report       {smoke_run / 'report.html'}" in summary
    assert f"  checkpoint   {smoke_run / 'checkpoints' / 'iter-0002'}" in summary
    page = (smoke_run / "report.html").read_text()
    assert "data:image/png;base64," in page  # with its plots


def test_smoke_run_writes_the_run_directory(smoke_run):
    rows = [json.loads(line) for line in (smoke_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    for row in rows:
        assert set(row) >= METRIC_KEYS
    assert rows[1]["takeovers"] >= 0 and rows[1]["env_steps"] > 0
    cfg = TrainConfig.from_json((smoke_run / "config.json").read_text())
    assert cfg.preset == "smoke" and cfg.horizon == 10
    saved = json.loads((smoke_run / "config.json").read_text())
    assert "horizon" not in saved["actor"] and "horizon" not in saved["critic"]  # one field
    assert [k for k, _ in checkpoint.complete(smoke_run / "checkpoints")] == [0, 1, 2]
    assert list((smoke_run / "tb").glob("events.*"))
    assert (smoke_run / "dataset" / "meta" / "info.json").exists()


def test_load_run_api(smoke_run):
    import aloe

    run = aloe.load_run(smoke_run)
    state = np.zeros(39, dtype=np.float32)
    chunks = run.sample(state, num_samples=3, seed=0)
    assert chunks.shape == (3, run.config.horizon, 4) and np.abs(chunks).max() <= 1.0
    assert np.array_equal(chunks, run.sample(state, num_samples=3, seed=0))
    q, q_pess = run.q_values(np.stack([state] * 3), chunks)
    assert q.shape == (run.config.critic.num_q, 3) and np.allclose(q_pess, q.min(0))
    v = run.value(state)  # one state: a number; a batch: an array
    assert isinstance(v, float) and run.value(np.stack([state] * 3)).shape == (3,)


def test_killed_and_resumed_run_equals_uninterrupted(smoke_run, tmp_path, same_metrics):
    out = tmp_path / "killed"
    proc = _train(out)
    deadline = time.time() + 300
    while not (out / "checkpoints" / "iter-0001").exists():  # kill inside iteration 2
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert checkpoint.latest(out / "checkpoints")[0] >= 1
    resumed = subprocess.run(
        [sys.executable, "-m", "aloe.cli", "train", "--resume", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr
    same_metrics(_metrics(out), _metrics(smoke_run))


def test_ctrl_c_prints_one_line_and_the_run_resumes(smoke_run, tmp_path, same_metrics):
    """SIGINT (Ctrl-C) inside iteration 1: exit 130, one line on stderr naming the resume
    command and the last checkpoint, no traceback; the resumed run ends as an uninterrupted
    one does."""
    out = tmp_path / "interrupted"
    proc = _train(out)
    deadline = time.time() + 300
    while not (out / "checkpoints" / "iter-0000").exists():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    last = checkpoint.latest(out / "checkpoints")[1]
    assert err.splitlines() == [
        f"aloe train: interrupted; `aloe train --resume {out}` continues "
        f"(the last checkpoint is {last})"
    ]
    resumed = subprocess.run(
        [sys.executable, "-m", "aloe.cli", "train", "--resume", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr
    same_metrics(_metrics(out), _metrics(smoke_run))


def test_bad_config_is_refused_before_any_work(tmp_path):
    for args, message in [
        (["--horizon", "0"], "config field horizon (0): must be >= 1"),
        (["--aloe.beta", "-1"], "beta"),
        (["--task", "no-such-task-v3"], "unknown task"),
        (["--exec-horizon", "50"], "exec_horizon"),
    ]:
        out = tmp_path / "bad"
        proc = _train(out, *args)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2 and message in err, err
        assert not out.exists()


def test_the_chunk_length_is_one_field():
    """`horizon` alone sets h: configs saved with the actor's and critic's old copies of it
    load when these agree, and are refused when they do not."""
    from aloe.errors import UsageError

    old = json.loads(preset("smoke").resolved().to_json())
    old["actor"]["horizon"] = old["critic"]["horizon"] = old["horizon"]
    assert TrainConfig.from_json(json.dumps(old)).horizon == 10
    old["critic"]["horizon"] = 5
    with pytest.raises(UsageError, match=r"critic.horizon \(5\): must be 10, the run's horizon"):
        TrainConfig.from_json(json.dumps(old))


def test_preset_rejects_unknown_name():
    with pytest.raises(ValueError, match="unknown preset"):
        preset("fast")


def test_the_mt10_preset_is_ppo_sbc_on_mt10_from_the_default_networks():
    cfg, default = preset("mt10"), preset("default")
    assert (cfg.task, cfg.algo, cfg.instructions, cfg.num_demos) == ("mt10", "ppo-sbc", "minilm", 5)
    assert (cfg.iterations, cfg.eval_episodes) == (12, 50)
    assert (cfg.actor, cfg.critic, cfg.aloe, cfg.ppo) == (
        default.actor,
        default.critic,
        default.aloe,
        default.ppo,
    )
    assert preset("mt10", "reach-v3,push-v3").task == "reach-v3,push-v3"
    cfg.validate()


def test_exploding_q_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "nan"
    proc = _train(out, "--optim.q-abs-max", "1e-6")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 3 and "stopped: metric" in err and "iter-0000" in err, err
    assert checkpoint.latest(out / "checkpoints")[0] == 0
    checkpoint.load(out / "checkpoints" / "iter-0000")


def test_collect_with_a_trained_policy_and_eval(smoke_run, tmp_path):
    d = tmp_path / "d"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "aloe.cli",
            "collect",
            "--task",
            "peg-insert-side-v3",
            "--episodes",
            "1",
            "--out",
            str(d),
            "--policy",
            str(smoke_run),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["policy"]["steps"] > 0
    res = subprocess.run(
        [sys.executable, "-m", "aloe.cli", "eval", "--run", str(smoke_run), "--episodes", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    result = json.loads((smoke_run / "eval-basic.json").read_text())
    assert result["episodes"] == 2 and 0.0 <= result["success_rate"] <= 1.0
    low, high = result["success_ci95"]
    assert 0.0 <= low <= result["success_rate"] <= high <= 1.0

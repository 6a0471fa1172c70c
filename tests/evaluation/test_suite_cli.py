"""`aloe eval --suite full` and `aloe plot-q` end to end on a smoke run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aloe import data as D
from aloe.errors import UsageError
from aloe.evaluation.action_ope import ActionOpeConfig, run_action_ope
from aloe.evaluation.ope import load_buffer
from aloe.run import load_run

pytestmark = pytest.mark.slow
ACTION_OPE = ("--action-ope-states", 3, "--action-ope-chunks", 2, "--action-ope-rollouts", 1)
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _aloe(*args):
    cmd = [sys.executable, "-m", "aloe.cli", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "smoke"
    _aloe("train", "--preset", "smoke", "--out", out, "--no-progress")
    return out


def test_action_ope_suite_alone_writes_action_ope_json(smoke_run):
    printed = json.loads(_aloe("eval", "--run", smoke_run, "--suite", "action-ope", *ACTION_OPE))
    saved = json.loads((smoke_run / "action_ope.json").read_text())
    assert printed["iteration"] == saved["iteration"] == 2 and printed["states"] == 3
    assert saved["applicable"] and saved["config"]["states"] == 3 and len(saved["samples"]) == 3
    assert printed["file"] == str(smoke_run / "action_ope.json")


def test_full_suite_writes_eval_json_and_the_report(smoke_run):
    basic = json.loads(_aloe("eval", "--run", smoke_run, "--episodes", 2))
    printed = json.loads(
        _aloe(
            "eval",
            "--run",
            smoke_run,
            "--suite",
            "full",
            "--episodes",
            2,
            "--ope-pairs",
            3,
            "--ope-rollouts",
            1,
            *ACTION_OPE,
        )
    )
    ev = json.loads((smoke_run / "eval.json").read_text())
    assert {"nominal", "variants", "perturbations", "q_traces", "ope", "action_ope"} <= set(ev)
    nominal = ev["nominal"]
    assert {"success_rate", "throughput", "episodes_per_hour", "mean_steps_to_success"} <= set(
        nominal
    )
    # the suite's nominal condition is `aloe eval` on the same seeds
    assert nominal["success_rate"] == basic["success_rate"]
    assert nominal["mean_episode_steps"] * nominal["episodes"] == basic["env_steps"]
    assert {"size-0.9", "mass-x3", "friction-x0.3", "colour-blue", "position-out"} <= set(
        ev["variants"]
    )
    assert {"action-noise", "push", "kick"} <= set(ev["perturbations"])
    ope = ev["ope"]
    assert ope["pairs"] == 3 and ope["restore_exact"] == 1.0
    assert {"q_pess", "q_members", "v", "behaviour_return", "by_source", "samples"} <= set(ope)
    assert len(ope["q_members"]) == 2  # the smoke critic's ensemble
    action = ev["action_ope"]  # the critic's ranking of chunks at one state
    assert action["applicable"] and action["counts"] == {"states": 3, "chunks": 9, "rollouts": 9}
    assert action["restore_exact"] == 1.0 and len(action["samples"]) == 3
    assert set(action["by_source"]) <= {"demo", "policy", "human"}
    assert {
        "within_state_spearman",
        "constant_truth",
        "sign_accuracy",
        "weights_pearson",
        "weights_spearman",
    } <= set(action)
    assert printed["action_ope"]["states"] == 3 and "by_source" in printed["action_ope"]
    figures = [*ev["q_traces"], ope["scatter"], action["figure"]]
    assert len(figures) == 4 and all((smoke_run / f).is_file() for f in figures)
    html = (smoke_run / "report.html").read_text()
    # the run's panels (only series that vary), 2 Q traces, 2 OPE figures
    assert html.count("data:image/png;base64,") >= 4
    assert "Q against the ground truth" in html and "position-out" in html
    assert "Action-level OPE" in html
    weights = ev["weights_by_source"]  # which data the actor imitates
    assert set(weights) <= {"demo", "policy", "human"} and "demo" in weights
    assert sum(w["rows"] for w in weights.values()) == pytest.approx(1.0)
    assert sum(w["weight_share"] for w in weights.values()) == pytest.approx(1.0)
    outcome = ev["weights_by_policy_outcome"]  # the policy's chunks by their fragment's end
    if "policy" in weights:
        assert sum(w["rows"] for w in outcome.values()) == pytest.approx(weights["policy"]["rows"])
        assert sum(w["weight_share"] for w in outcome.values()) == pytest.approx(
            weights["policy"]["weight_share"]
        )
    assert "Which data the actor imitates" in html


def test_plot_q_cli(smoke_run, tmp_path):
    out = tmp_path / "rollout.png"
    assert _aloe("plot-q", "--run", smoke_run, "--rollout", "--out", out).strip() == str(out)
    assert out.read_bytes()[:4] == b"\x89PNG"
    printed = _aloe("plot-q", "--run", smoke_run, "--episode", 0).strip()
    assert printed.endswith("eval/qtrace-episode-0.png")
    bare = tmp_path / "afile"  # matplotlib adds .png: the path printed is the one written
    assert _aloe("plot-q", "--run", smoke_run, "--out", bare).strip() == f"{bare}.png"
    assert Path(f"{bare}.png").is_file() and not bare.exists()
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "aloe.cli",
            "plot-q",
            "--run",
            str(smoke_run),
            "--rollout",
            "--episode",
            "1",
        ],
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert bad.returncode == 2 and "not both" in bad.stderr


def test_full_suite_scores_an_awr_runs_state_value(tmp_path):
    run = tmp_path / "awr"
    _aloe("train", "--preset", "smoke", "--algo", "awr", "--out", run, "--no-progress")
    _aloe(
        "eval",
        "--run",
        run,
        "--suite",
        "full",
        "--episodes",
        1,
        "--ope-pairs",
        2,
        "--ope-rollouts",
        1,
        *ACTION_OPE,
    )
    ev = json.loads((run / "eval.json").read_text())
    ope = ev["ope"]
    assert ev["algo"] == "awr" and ev["q_traces"] == []  # no Q critic to trace
    assert "q_pess" not in ope and ope["value:awr V(s)"]["n"] == 2
    assert ev["action_ope"]["applicable"] is False  # said, not failed
    assert "not a chunked Q critic" in ev["action_ope"]["reason"]
    assert "awr V(s)" in (run / "report.html").read_text()
    assert "Not applicable" in (run / "report.html").read_text()
    with pytest.raises(UsageError, match="not a chunked Q critic"):
        run_action_ope(load_run(run), ActionOpeConfig(states=1, chunks=1, rollouts=1))


def test_action_ope_api_weights_are_the_learners_own(smoke_run):
    run = load_run(smoke_run)
    cfg = ActionOpeConfig(states=3, chunks=2, rollouts=1, seed=3)
    result = run_action_ope(run, cfg)
    assert result.truth.shape == (3, 3, 1) and result.q_members.shape == (2, 3, 3)
    frames, _ = load_buffer(run)  # 3 states: one of each source the buffer holds
    assert sorted(result.cands.source) == sorted(set(frames[D.SOURCE].astype(str)))
    assert result.exact.all()
    run.learner.generator.manual_seed(cfg.seed)  # the update's computation, recomputed
    w, _ = run.learner.actor_weights(result.cands.batch)
    np.testing.assert_allclose(result.weights, w.numpy(), rtol=1e-6)
    q, _ = run.q_values(result.cands.states, result.cands.chunks[:, 1])  # π's first chunk
    np.testing.assert_allclose(result.q_members[:, :, 1], q, rtol=1e-5, atol=1e-5)
    assert result.wall_s > 0

"""`aloe eval --suite full` and `aloe plot-q` end to end on a smoke run."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow
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


def test_full_suite_writes_eval_json_and_the_report(smoke_run):
    basic = json.loads(_aloe("eval", "--run", smoke_run, "--episodes", 2))
    _aloe("eval", "--run", smoke_run, "--suite", "full", "--episodes", 2, "--ope-pairs", 3,
          "--ope-rollouts", 1)  # fmt: skip
    ev = json.loads((smoke_run / "eval.json").read_text())
    assert {"nominal", "variants", "perturbations", "q_traces", "ope"} <= set(ev)
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
    figures = [*ev["q_traces"], ope["scatter"]]
    assert len(figures) == 3 and all((smoke_run / f).is_file() for f in figures)
    html = (smoke_run / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4  # metrics, two Q traces, OPE scatter
    assert "Off-policy evaluation accuracy" in html and "position-out" in html
    weights = ev["weights_by_source"]  # which data the actor imitates
    assert set(weights) <= {"demo", "policy", "human"} and "demo" in weights
    assert sum(w["rows"] for w in weights.values()) == pytest.approx(1.0)
    assert sum(w["weight_share"] for w in weights.values()) == pytest.approx(1.0)
    assert "Which data the actor imitates" in html


def test_plot_q_cli(smoke_run, tmp_path):
    out = tmp_path / "rollout.png"
    assert _aloe("plot-q", "--run", smoke_run, "--rollout", "--out", out).strip() == str(out)
    assert out.read_bytes()[:4] == b"\x89PNG"
    printed = _aloe("plot-q", "--run", smoke_run, "--episode", 0).strip()
    assert printed.endswith("eval/qtrace-episode-0.png")
    bad = subprocess.run([sys.executable, "-m", "aloe.cli", "plot-q", "--run", str(smoke_run),
                          "--rollout", "--episode", "1"], capture_output=True, text=True, env=ENV)  # fmt: skip
    assert bad.returncode == 2 and "not both" in bad.stderr


def test_full_suite_scores_an_awr_runs_state_value(tmp_path):
    run = tmp_path / "awr"
    _aloe("train", "--preset", "smoke", "--algo", "awr", "--out", run, "--no-progress")
    _aloe("eval", "--run", run, "--suite", "full", "--episodes", 1, "--ope-pairs", 2,
          "--ope-rollouts", 1)  # fmt: skip
    ev = json.loads((run / "eval.json").read_text())
    ope = ev["ope"]
    assert ev["algo"] == "awr" and ev["q_traces"] == []  # no Q critic to trace
    assert "q_pess" not in ope and ope["value:awr V(s)"]["n"] == 2
    assert "awr V(s)" in (run / "report.html").read_text()

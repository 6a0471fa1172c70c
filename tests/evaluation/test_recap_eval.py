"""The evaluation suite on a RECAP smoke run of each advantage source: it reads RECAP's
value as AWR's (`advantage value`) or ALOE's (`q`) and scores its labels against the truth."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from aloe.errors import UsageError
from aloe.evaluation.action_ope import ActionOpeConfig
from aloe.evaluation.ope import OpeConfig
from aloe.evaluation.qtrace import PlotQArgs, _check_plot_args
from aloe.evaluation.suite import SuiteConfig, run_suite
from aloe.run import load_run

pytestmark = pytest.mark.slow
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module", params=["value", "q"])
def recap_run(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / f"recap-{request.param}"
    cmd = [sys.executable, "-m", "aloe.cli", "train", "--preset", "smoke", "--algo", "recap"]
    cmd += ["--iterations", "1", "--recap.advantage", request.param, "--out", str(out)]
    proc = subprocess.run(
        [*cmd, "--no-progress"], capture_output=True, text=True, timeout=300, env=ENV
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return request.param, out


def test_the_suite_reads_recaps_value_and_scores_its_indicator(recap_run):
    advantage, root = recap_run
    cfg = SuiteConfig(
        episodes=1,
        variants=False,
        perturbations=[],
        ope=OpeConfig(pairs=2, rollouts=1),
        action_ope=ActionOpeConfig(states=3, chunks=2, rollouts=1),
        progress=False,
    )
    run_suite(root, cfg)
    ev = json.loads((root / "eval.json").read_text())
    ope, action = ev["ope"], ev["action_ope"]
    assert action["applicable"] and action["indicator_n"] == 3
    assert set(action["by_source"]) == {"demo", "human", "policy"}
    assert all(s["indicator_n"] == 1 for s in action["by_source"].values())
    human = next(s for s in action["samples"] if s["source"] == "human")
    assert human["indicator"] is True  # the operator's rows are positive, as in training
    html = (root / "report.html").read_text()
    assert "indicator_agreement" in html
    run = load_run(root)
    state = np.zeros(run.obs.dim, np.float32)
    if advantage == "value":  # AWR's: its V(s) against the truth, no Q to trace or rank
        assert run.value_kind == "state" and ev["q_traces"] == []
        assert "q_pess" not in ope and ope["value:recap V(s)"]["n"] == 2
        assert "within_state_spearman" not in action
        with pytest.raises(ValueError, match="state value"):
            run.q_values(state, run.sample(state)[0])
        with pytest.raises(UsageError, match="learns a state value"):
            _check_plot_args(PlotQArgs(run=root, rollout=True))
    else:  # ALOE's: Q traces, Q^π and V^π against the truth, chunks ranked
        assert run.value_kind == "q" and len(ev["q_traces"]) == 2
        assert {"q_pess", "v"} <= set(ope) and "value:recap V(s)" not in ope
        assert "within_state_spearman" in action and "sign_accuracy" in action
        assert np.isfinite(run.value(state))
        _check_plot_args(PlotQArgs(run=root, rollout=True))

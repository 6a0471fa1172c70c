import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from aloe.evaluation.report import build_run_report  # noqa: E402

SPEED = {
    "episodes": 2,
    "success_rate": 0.5,
    "success_ci95": [0.1, 0.9],
    "mean_steps_to_success": 80.0,
    "throughput": 900.0,
    "episodes_per_hour": 1800.0,
    "failure_reasons": {"timeout": 1},
}
ACC = {"spearman": 0.5, "bias": -3.0, "rmse": 4.0, "n": 2}


def _png(path):
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def test_report_embeds_metrics_tables_and_figures(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"task": "reach-v3", "algo": "aloe"}))
    rows = [
        {"iteration": 0, "success_rate": 0.1, "bc_loss": 1.0, "critic_loss": None},
        {"iteration": 1, "success_rate": 0.4, "critic_loss": 2.0},
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    report = build_run_report(tmp_path)
    assert report == tmp_path / "report.html"
    assert "No eval.json" in report.read_text() and report.read_text().count("<img") == 1

    _png(tmp_path / "eval" / "qtrace-episode-3.png")
    _png(tmp_path / "eval" / "ope-scatter.png")
    scores = {"q_pess": ACC, "q_members": [ACC, ACC], "v": ACC, "behaviour_return": ACC}
    ev = {
        "iteration": 1,
        "seeds": [0, 1],
        "nominal": SPEED,
        "variants": {"size-1.1": SPEED},
        "perturbations": {"push": SPEED},
        "q_traces": ["eval/qtrace-episode-3.png"],
        "ope": {
            "config": {"rollouts": 2, "watch": True},
            "pairs": 2,
            "restore_exact": 1.0,
            "gamma": 0.99,
            "exec_horizon": 5,
            **scores,
            "by_source": {"policy": scores},
            "scatter": "eval/ope-scatter.png",
        },
    }
    (tmp_path / "eval.json").write_text(json.dumps(ev))
    html = build_run_report(tmp_path).read_text()
    assert html.count("data:image/png;base64,") == 3  # metrics, Q trace, OPE scatter
    for text in (
        "size-1.1",
        "push",
        "Q_pess (Eq. 9)",
        "Q member 1",
        "behaviour return",
        "throughput",
        "timeout ×1",
        "[0.10, 0.90]",
    ):
        assert text in html, text

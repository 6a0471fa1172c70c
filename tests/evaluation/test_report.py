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
    page = report.read_text()
    assert page.count("not run yet") == 2 and page.count("<img") == 1  # success only

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


ROWS = [
    {
        "iteration": k,
        "success_rate": rate,
        "eval_episodes": 20,
        "human_steps": human,
        "takeovers": takeovers,
        "total_human_steps": total,
        "bc_loss": 1.2 if k == 0 else None,
        "critic_loss": None if k == 0 else 3.0 - k,
        "q_mean": None if k == 0 else -1.0 * k,
        "q_pess_mean": None if k == 0 else -1.5 * k,
        "weight_clipped_frac": None if k == 0 else 0.0,
        "wall_s": 60.0,
    }
    for k, rate, human, takeovers, total in [
        (0, 0.45, 250, 0, 250),
        (1, 0.6, 400, 12, 650),
        (2, 0.7, 300, 9, 950),
    ]
]


def _built(tmp_path, monkeypatch, rows=ROWS):
    """Build the report of `rows`, keeping every figure it embeds."""
    import aloe.evaluation.report as report

    (tmp_path / "config.json").write_text(
        json.dumps({"task": "pick-place-v3", "algo": "aloe", "preset": "default", "seed": 0})
    )
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    figures = []

    def keep(fig, alt=""):
        figures.append(fig)
        return f"<img alt='{alt}'>"

    monkeypatch.setattr(report, "figure_html", keep)
    return report.build_run_report(tmp_path).read_text(), figures


def _drawn(ax):
    """Each series an axes draws: its line's y values, or its bars' heights."""
    lines = [list(line.get_ydata()) for line in ax.get_lines() if len(line.get_ydata())]
    bars = [p.get_height() for p in ax.patches]
    return [y for y in lines if len(y) > 1 or not bars] + ([bars] if bars else [])


def test_no_constant_series_is_plotted_and_every_axis_is_labelled(tmp_path, monkeypatch):
    page, figures = _built(tmp_path, monkeypatch)
    assert figures, "the report drew nothing"
    for fig in figures:
        for ax in fig.axes:
            if not ax.axison:
                continue
            assert ax.get_xlabel() and ax.get_ylabel(), ax.get_title()
            for y in _drawn(ax):
                finite = [v for v in y if v == v]
                assert len(finite) >= 2 and len(set(finite)) > 1, (ax.get_title(), y)
    # what was left out is listed: one point (bc_loss), one value (eval_episodes, clipping)
    for constant in ("bc_loss", "eval_episodes", "weight_clipped_frac"):
        assert f"<td>{constant}</td>" in page, constant
    assert "<details><summary>metrics.jsonl: 3 rows" in page


def test_the_headline_says_bc_to_final_success_with_intervals_operator_and_time(
    tmp_path, monkeypatch
):
    (tmp_path / "eval-basic.json").write_text(
        json.dumps({"iteration": 2, "success_rate": 0.5, "episodes": 50})
    )
    (tmp_path / "eval.json").write_text(json.dumps({"iteration": 2, "nominal": SPEED}))
    page, _ = _built(tmp_path, monkeypatch)
    headline = page[page.index('<div class="headline">') : page.index("<h2>")]
    assert "Success BC 0.45 [0.26, 0.66] → final 0.70 [0.48, 0.85]" in headline
    assert "Operator</b> 950 steps (250 demonstrating, 700 in 21 takeovers)" in headline
    assert "wall time</b> 3 min 00 s" in headline
    assert "aloe eval</b> (iteration 2): success 0.50 [0.37, 0.63] on 50 episodes" in headline
    assert "aloe eval --suite full</b> (iteration 2): success 0.50 [0.09, 0.91]" in headline


def test_a_bc_only_run_plots_no_single_point(tmp_path, monkeypatch):
    page, figures = _built(tmp_path, monkeypatch, rows=ROWS[:1])
    assert figures == [] and "One iteration (the BC warm start)" in page
    assert "Success 0.45 [0.26, 0.66]" in page

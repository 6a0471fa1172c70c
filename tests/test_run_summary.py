"""What a run says on stderr: phase lines or bars (aloe.progress), the per-iteration line and
the closing summary (aloe.run_summary), and a report that fails only with a warning."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import pytest

from aloe import checkpoint, progress
from aloe.evaluation.run_report import write_report
from aloe.progress import Phase, duration
from aloe.run_summary import iteration_line, sparkline, summary


def _row(k: int, success: float, takeovers: int, human: int, total: int) -> dict:
    return {
        "iteration": k,
        "success_rate": success,
        "eval_episodes": 20,
        "takeovers": takeovers,
        "human_steps": human,
        "total_human_steps": total,
        "wall_s": 60.0,
    }


HISTORY = [_row(0, 0.1, 0, 250, 250), _row(1, 0.3, 20, 500, 750), _row(2, 0.55, 17, 484, 1234)]
CFG = SimpleNamespace(out=Path("runs/aloe"), algo="aloe", task="pick-place-v3", preset="default")


def test_sparkline_is_on_a_fixed_zero_to_one_scale():
    assert sparkline([0.0, 1 / 7, 0.5, 1.0, float("nan")]) == "▁▂▅█·"
    assert sparkline([0.0, 0.0]) == "▁▁"  # a run that learned nothing looks flat, not full


def test_duration_reads_as_a_person_says_it():
    assert [duration(s) for s in (0.42, 59.94, 65, 3725)] == [
        "0.4 s",
        "59.9 s",
        "1 min 05 s",
        "1 h 02 min",
    ]


def test_iteration_line():
    assert iteration_line(HISTORY[1], 5) == (
        "iteration 1/5: success 0.30 on 20 episodes, 20 takeovers, 500 operator steps, 1 min 00 s"
    )
    assert "BC warm start" in iteration_line(HISTORY[0], 5)


def test_summary_names_the_result_the_operator_and_every_path(tmp_path):
    cfg = SimpleNamespace(**{**vars(CFG), "out": tmp_path})
    checkpoint.save(tmp_path / "checkpoints", 2, {"history": HISTORY})
    text = summary(cfg, HISTORY, 200.0, resumed=False, report=tmp_path / "report.html")
    assert text.splitlines() == [
        f"aloe train: finished {tmp_path}: aloe on pick-place-v3, preset default, "
        "2 iterations after the BC warm start",
        "  success      ▂▃▅  0.10 0.30 0.55  (iterations 0–2; 20 episodes each)",
        "  BC → final   0.10 → 0.55",
        "  operator     1234 steps: 250 demonstrating, 984 in 37 takeovers",
        "  wall time    3 min 20 s",
        f"  report       {tmp_path / 'report.html'}",
        f"  checkpoint   {tmp_path / 'checkpoints' / 'iter-0002'}",
        f"  TensorBoard  tensorboard --logdir {tmp_path / 'tb'}",
        f"  metrics      {tmp_path / 'metrics.jsonl'}",
    ]


def test_summary_of_a_resumed_run_and_of_a_failed_report(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # runs/aloe: nothing there
    text = summary(CFG, HISTORY, 30.0, resumed=True, report=None)
    assert text.startswith("aloe train: resumed and finished runs/aloe:")
    assert "  wall time    30.0 s this session; 3 min 00 s over all iterations" in text
    assert "  report       not written: `aloe report runs/aloe` retries" in text
    assert "  checkpoint   none" in text


def test_a_long_run_lists_its_first_and_last_rates():
    rows = [_row(k, k / 30, 1, 10, 10 * (k + 1)) for k in range(31)]
    line = summary(CFG, rows, 1.0, resumed=False, report=None).splitlines()[1]
    assert "0.00 0.03 0.07 … 0.93 0.97 1.00" in line and len(sparkline([0.0] * 31)) == 31


def test_a_report_that_cannot_be_written_is_a_warning(tmp_path, capsys, monkeypatch):
    import aloe.evaluation.report as report

    def broken(run_dir):
        raise OSError("disk full")

    monkeypatch.setattr(report, "build_run_report", broken)
    assert write_report(tmp_path, "aloe train") is None
    assert capsys.readouterr().err == (
        f"aloe train: warning: could not write {tmp_path / 'report.html'} (OSError: disk "
        f"full); `aloe report {tmp_path}` retries\n"
    )


@pytest.mark.parametrize(
    ("flag", "tty", "shown"),
    [
        (None, False, "line"),
        (None, True, "bar"),
        (True, False, "bar"),
        (False, True, "nothing"),
    ],
)
def test_a_phase_is_a_bar_on_a_terminal_a_line_in_a_log(flag, tty, shown, monkeypatch):
    err = io.StringIO()
    err.isatty = lambda: tty  # type: ignore[method-assign]
    monkeypatch.setattr("sys.stderr", err)
    phase = Phase("collect[1]", 3, flag, unit="episode")
    for _ in range(3):
        phase.update()
    phase.set_postfix(success=2)
    phase.close()
    text = err.getvalue()
    if shown == "line":
        assert text.startswith("  collect[1]: 3 episodes in ") and text.endswith(" s (success 2)\n")
        assert text.count("\n") == 1 and "\r" not in text
    elif shown == "bar":
        assert "\r" in text
    else:
        assert text == ""
    assert progress.bars(flag) == (shown == "bar")


def test_iterate_counts_and_closes_after_the_last_item(capsys):
    phase = Phase("actor[2]", 4, None, unit="step")
    assert list(phase.iterate(range(4))) == [0, 1, 2, 3]
    assert capsys.readouterr().err.startswith("  actor[2]: 4 steps in ")

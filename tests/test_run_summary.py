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
from aloe.run_summary import (
    banner,
    iteration_line,
    measured_duration,
    sparkline,
    summary,
    time_left,
)


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
        start, end = text.splitlines()
        assert start == "  collect[1]: 3 episodes …"
        assert end.startswith("  collect[1]: 3 episodes in ") and end.endswith(" s (success 2)")
        assert "\r" not in text
    elif shown == "bar":
        assert "\r" in text
    else:
        assert text == ""
    assert progress.bars(flag) == (shown == "bar")


def test_iterate_counts_and_closes_after_the_last_item(capsys):
    phase = Phase("actor[2]", 4, None, unit="step")
    assert list(phase.iterate(range(4))) == [0, 1, 2, 3]
    assert capsys.readouterr().err.splitlines()[1].startswith("  actor[2]: 4 steps in ")


class FakeClock:
    """A clock a test moves by hand: `aloe.progress.clock` in place of the real one."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_long_phase_in_a_log_says_where_it_is_every_30_s_and_never_more_often(monkeypatch):
    """3000 steps of 0.7 s each: a line when it starts, then one progress line each time 30 s
    have passed (done, rate, time left), so the log is never silent for 60 s."""
    clock = FakeClock()
    monkeypatch.setattr(progress, "clock", clock)
    err = io.StringIO()
    err.isatty = lambda: False  # type: ignore[method-assign]
    monkeypatch.setattr("sys.stderr", err)
    phase = Phase("bc warm start", 3000, None, unit="step")
    said_at = [clock.now]
    for _ in range(3000):
        clock.now += 0.7
        before = err.getvalue().count("\n")
        phase.update()
        if err.getvalue().count("\n") > before:
            said_at.append(clock.now)
    phase.close()
    lines = err.getvalue().splitlines()
    assert lines[0] == "  bc warm start: 3000 steps …"
    assert lines[-1] == "  bc warm start: 3000 steps in 35 min 00 s"
    gaps = [b - a for a, b in zip(said_at, said_at[1:], strict=False)]
    assert max(gaps) <= 60 and min(gaps) >= 30
    assert len(lines) == 2 + len(said_at) - 1
    assert lines[1] == "  bc warm start: 43/3000 steps, 1.43 steps/s, about 34 min 30 s left"


def test_a_quick_phase_in_a_log_says_only_when_it_starts_and_ends(monkeypatch, capsys):
    clock = FakeClock()
    monkeypatch.setattr(progress, "clock", clock)
    phase = Phase("collect[0]", 6, None, unit="episode", at_most=True)
    for _ in range(2):
        clock.now += 10
        phase.update()
    phase.close()
    assert capsys.readouterr().err.splitlines() == [
        "  collect[0]: at most 6 episodes …",
        "  collect[0]: 2 episodes in 20.0 s",
    ]


def test_time_left_follows_the_iterations_after_the_warm_start():
    assert time_left(HISTORY[:1], 5) is None  # BC's pace says nothing of an iteration's
    assert time_left(HISTORY, 5) == 3 * 60.0
    assert time_left(HISTORY, 2) is None
    line = iteration_line(HISTORY[1], 5, left_s=240.0)
    assert line.endswith("1 min 00 s; about 4 min 00 s left")


def test_banner_says_where_what_how_long_and_how_to_continue():
    from aloe.config import preset

    cfg = preset("default")
    cfg.out = Path("runs/aloe")
    cfg.seed = 3
    text = banner(cfg, "ALOE", iterates=True, own_collect=False, start=0)
    lines = text.splitlines()
    assert lines[0] == "aloe train: runs/aloe: ALOE on pick-place-v3, preset default, seed 3"
    assert lines[1].startswith("  iteration 0    10 operator demonstrations → 3000 BC steps")
    assert "the operator takes over" in lines[2] and "ALOE update" in lines[2]
    assert "about 10–20 min (the default preset's measured figure" in lines[3]
    assert "`aloe train --resume runs/aloe`" in lines[4]
    cfg.aloe.critic_steps = 800  # other sizes: no measured figure claimed
    assert measured_duration(cfg) is None
    assert "no measured figure" in banner(cfg, "ALOE", True, False, start=2)
    assert "(resuming at iteration 2)" in banner(cfg, "ALOE", True, False, start=2)

import math

import pytest

from aloe.evaluation.metrics import speed_metrics, wilson_interval


def test_throughput_from_known_episode_lengths():
    # 80 + 160 + 240 steps at 80 Hz = 6 s of robot time = 1/600 h
    m = speed_metrics([80, 160, 240], [True, False, True], control_period=1 / 80)
    assert m.episodes == 3
    assert m.success_rate == pytest.approx(2 / 3)
    assert m.mean_steps_to_success == pytest.approx(160.0)
    assert m.mean_episode_steps == pytest.approx(160.0)
    assert m.robot_hours == pytest.approx(1 / 600)
    assert m.episodes_per_hour == pytest.approx(1800.0)  # Appendix E: every completed episode
    assert m.throughput == pytest.approx(1200.0)  # successful episodes per hour


def test_faster_successes_give_higher_throughput_at_equal_success_rate():
    slow = speed_metrics([200, 200], [True, True], control_period=1 / 80)
    fast = speed_metrics([100, 100], [True, True], control_period=1 / 80)
    assert fast.success_rate == slow.success_rate == 1.0
    assert fast.throughput == pytest.approx(2 * slow.throughput) == pytest.approx(2880.0)


def test_no_success_and_no_episodes():
    m = speed_metrics([300, 300], [False, False], control_period=0.0125)
    assert m.success_rate == 0.0 and m.throughput == 0.0 and math.isnan(m.mean_steps_to_success)
    assert m.episodes_per_hour == pytest.approx(2 / (600 * 0.0125 / 3600))
    empty = speed_metrics([], [], control_period=0.0125)
    assert empty.episodes == 0 and math.isnan(empty.success_rate) and math.isnan(empty.throughput)
    assert set(m.as_dict()) >= {"throughput", "episodes_per_hour", "success_ci95", "robot_hours"}


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="lengths"):
        speed_metrics([1, 2], [True], control_period=0.1)
    with pytest.raises(ValueError, match="control_period"):
        speed_metrics([1], [True], control_period=0.0)


def test_wilson_interval():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(1 - hi) and lo == pytest.approx(0.2366, abs=1e-4)

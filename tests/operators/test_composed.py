"""The composed operator's planner (aloe.operators.composed) on constructed scenes."""

import numpy as np
import pytest

pytest.importorskip("ogbench", reason="needs the ogbench extra: pip install 'aloe[ogbench]'")

from aloe.envs.ogbench_tasks import lights_out  # noqa: E402
from aloe.operators.composed import at_control_rate, next_subtask  # noqa: E402
from aloe.operators.human import HumanConfig  # noqa: E402


def _press(board, i, rows=3, cols=3):
    r, c = divmod(i, cols)
    for dr, dc in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)):
        if 0 <= r + dr < rows and 0 <= c + dc < cols:
            board[(r + dr) * cols + c + dc] ^= 1


def test_lights_out_presses_reach_the_goal():
    rng = np.random.default_rng(0)
    for _ in range(20):
        now, goal = rng.integers(0, 2, 9), rng.integers(0, 2, 9)
        board = now.copy()
        for i in np.flatnonzero(lights_out(now, goal, 3, 3)):
            _press(board, i)
        assert np.array_equal(board, goal)


def test_lights_out_refuses_an_unreachable_pattern():
    # 4x4 lights out is not full rank: pressing one corner's pattern alone is unreachable
    now, goal = np.zeros(16, int), np.zeros(16, int)
    goal[0] = 1
    with pytest.raises(ValueError, match="cannot be reached"):
        lights_out(now, goal, 4, 4)


def _scene(buttons, drawer, window, goal_buttons=(0, 0)):
    cube = np.array([0.35, -0.05, 0.02])
    return {
        "privileged/block_0_pos": cube,
        "goal/block_0_pos": cube.copy(),
        "button_states": np.array(buttons),
        "goal/button_states": np.array(goal_buttons),
        "button_top_pos": [np.zeros(3), np.ones(3)],
        "privileged/drawer_pos": np.array([drawer]),
        "goal/drawer_pos": 0.0,
        "privileged/window_pos": np.array([window]),
        "goal/window_pos": 0.0,
        "goal/drawer_handle_pos": np.zeros(3),
        "goal/window_handle_pos": np.zeros(3),
    }


@pytest.mark.parametrize(
    ("buttons", "drawer", "window", "expect"),
    [
        ((0, 0), -0.16, 0.2, ("button", 0)),  # the drawer is locked: unlock it first
        ((1, 0), -0.16, 0.2, ("drawer", None)),  # unlocked: close it
        ((1, 0), 0.0, 0.2, ("button", 1)),  # then the window's lock
        ((1, 1), 0.0, 0.2, ("window", None)),
        ((1, 1), 0.0, 0.0, ("button", 0)),  # everything closed: lock them again
        ((0, 0), 0.0, 0.0, None),
    ],
)
def test_the_scene_planner_respects_the_locks(buttons, drawer, window, expect):
    plan = next_subtask(_scene(buttons, drawer, window))
    if expect is None:
        assert plan is None
        return
    kind, target = plan
    assert kind == expect[0]
    if kind == "button":
        assert target["privileged/target_button"] == expect[1]
        assert target["privileged/target_button_state"] == 1 - buttons[expect[1]]


def test_the_cube_planner_takes_the_first_cube_off_its_goal():
    at, goal = np.array([0.35, -0.1, 0.02]), np.array([0.35, 0.1, 0.02])
    info = {
        "privileged/block_0_pos": goal.copy(),
        "goal/block_0_pos": goal,
        "privileged/block_1_pos": at,
        "goal/block_1_pos": goal + [0.15, 0, 0],
    }
    kind, target = next_subtask(info)
    assert kind == "cube" and target["privileged/target_block"] == 1
    info["privileged/block_1_pos"] = info["goal/block_1_pos"]
    assert next_subtask(info) is None


def test_the_human_profile_keeps_its_times_at_ogbench_rate():
    cfg = at_control_rate(HumanConfig())  # 80 Hz steps -> 20 Hz steps
    assert (cfg.reaction_steps, cfg.lag_steps, cfg.notice_steps) == (5, 0, 8)
    assert cfg.drift_tau_steps == 10.0 and cfg.speed == HumanConfig().speed

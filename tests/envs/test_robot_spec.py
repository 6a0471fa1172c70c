"""The robot row's action units (`ActionUnits`, the one map between a robot's units and
aloe's [-1, 1]) on hand-computed values, and its spec's checks."""

from __future__ import annotations

import numpy as np
import pytest

from aloe.envs.base import EnvConfig
from aloe.envs.robot_spec import ActionUnits, RobotSpec
from aloe.errors import UsageError

# an SO-101-like arm: a joint in [-100, 100], one in degrees [0, 180], a gripper never moved
UNITS = ActionUnits.of([-100.0, 0.0, 5.0], [100.0, 180.0, 5.0])


def test_robot_units_map_affinely_into_minus_one_to_one():
    np.testing.assert_array_equal(UNITS.to_unit([-100.0, 0.0, 5.0]), [-1.0, -1.0, 0.0])
    np.testing.assert_array_equal(UNITS.to_unit([100.0, 180.0, 5.0]), [1.0, 1.0, 0.0])
    np.testing.assert_array_equal(UNITS.to_unit([50.0, 45.0, 5.0]), [0.5, -0.5, 0.0])
    assert UNITS.to_unit([[0.0, 90.0, 5.0]]).dtype == np.float32  # batches too
    np.testing.assert_array_equal(UNITS.to_unit([200.0, -10.0, 7.0]), [1.0, -1.0, 0.0])  # clipped


def test_aloe_actions_map_back_to_the_robots_units():
    np.testing.assert_array_equal(UNITS.to_robot([0.5, -0.5, 0.7]), [50.0, 45.0, 5.0])
    np.testing.assert_array_equal(UNITS.to_robot([3.0, -2.0, 0.0]), [100.0, 0.0, 5.0])  # clipped
    a = np.array([0.25, 0.1, 0.0], np.float32)
    np.testing.assert_allclose(UNITS.to_unit(UNITS.to_robot(a)), a, atol=1e-7)


def test_a_degenerate_range_holds_the_value_where_the_demonstrations_did():
    """low == high: 0 in aloe's units whatever the robot reports, and back to `low`."""
    assert UNITS.to_unit([0.0, 0.0, -3.0])[2] == 0.0
    assert UNITS.to_robot([0.0, 0.0, -1.0])[2] == UNITS.to_robot([0.0, 0.0, 1.0])[2] == 5.0


def test_the_served_ranges_or_aloes_own():
    meta = {"action_units": UNITS.metadata()}
    sent = ActionUnits.from_metadata(meta, 3)
    np.testing.assert_array_equal(sent.low, UNITS.low)
    np.testing.assert_array_equal(sent.high, UNITS.high)
    own = ActionUnits.from_metadata({}, 2)  # a server that sends none: a simulator's units
    np.testing.assert_array_equal(own.to_robot([0.5, -1.0]), [0.5, -1.0])
    with pytest.raises(ValueError, match="a low above its high"):
        ActionUnits.of([1.0], [0.0])


def test_a_spec_is_empty_or_whole_and_only_a_robot_runs():
    EnvConfig().validate()  # empty: any task
    spec = RobotSpec(2, 1, 30.0, "pick", (-1.0,), (1.0,))
    EnvConfig(task="robot", robot=spec).validate()
    with pytest.raises(UsageError, match="env.robot .*: must be empty unless --task robot"):
        EnvConfig(robot=spec).validate()
    half = RobotSpec(2, 1, 30.0, "pick", (-1.0, 0.0), (1.0,))
    with pytest.raises(UsageError, match="must hold one range per action value \\(1\\)"):
        EnvConfig(task="robot", robot=half).validate()

"""The OGBench tasks' table, failure config and lights-out solver: importable without OGBench.

`aloe.envs.ogbench` runs the tasks and holds OGBench's row; `aloe.envs.base.EnvConfig` reads
the failure config from here (a module of its own, so that it imports no simulator).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from aloe.errors import require

CONTROL_HZ = 20.0  # OGBench: 25 physics steps of 2 ms per action
ACTION_DIM = 5  # hand xyz delta (5 cm per unit), yaw delta (0.3 rad), gripper (+1 closes)
CAMERAS = ("front", "front_pixels")  # the cameras of every OGBench manipulation model


class OGTask(NamedTuple):
    gym_id: str  # OGBench's single-task environment (its default task)
    instruction: str
    state_dim: int  # 4 + OGBench's state vector (checked by tests/envs/test_ogbench.py)
    max_steps: int  # OGBench's own time limit for the task
    long_horizon: bool  # several stages: the paper's execution chunk 5


TASKS: dict[str, OGTask] = {
    "cube-double": OGTask(
        "cube-double-singletask-v0", "move both cubes to their goal positions", 41, 500, True
    ),
    "scene": OGTask(
        "scene-singletask-v0",
        "unlock the drawer and the window, close both, then lock them again",
        44,
        750,
        True,
    ),
    "puzzle-3x3": OGTask(
        "puzzle-3x3-singletask-v0",
        "press the buttons until the board shows the goal pattern",
        59,
        500,
        True,
    ),
}

# Mean length of the composed operator's noise-free successful episodes (Eq. 14's C_fail),
# measured with benchmarks/ogbench_operator.py --seeds 20 (all 20 solved on each task); a
# task missing here is measured when first needed (10 episodes).
OPERATOR_EPISODE_LENGTH: dict[str, float | None] = {
    "cube-double": 96.0,
    "scene": 164.9,
    "puzzle-3x3": 155.4,
}

IRRECOVERABLE_OFF_TABLE = "object fell off the table"
IRRECOVERABLE_REACH = "object left the workspace: out of the arm's reach"
IRRECOVERABLE_DROP = "object dropped far from the goal"
UNDONE = "completed stage undone"


@dataclass
class OGBenchFailures:
    """Failure events of the OGBench tasks (metres). The state checks (`off_table`,
    `out_of_reach`, `drop`) apply whoever acts; `undone` judges the policy's steps only."""

    off_table: bool = True
    """A cube beyond the table top's edge (OGBench's table is the floor plane, drawn 2 m
    square around the arm: MuJoCo would let a cube slide on past it) or below `table_z` (a
    solver blow-up) has fallen off the table (irrecoverable: the operator rewinds)."""
    table_z: float = -0.02
    """Height under which a cube is off the table (the table top is at z = 0, a cube rests at
    0.02)."""
    out_of_reach: bool = True
    """A cube farther than `reach_margin` outside the arm's workspace cannot be grasped."""
    reach_margin: float = 0.05
    """Margin around OGBench's workspace bounds (x 0.25..0.6, y −0.35..0.35)."""
    drop: bool = True
    """A cube lifted above `lift_height` that lands again away from its goal and the hand."""
    lift_height: float = 0.05
    """Height above the table at which a cube counts as lifted."""
    drop_goal_distance: float = 0.06
    """A lifted cube that lands farther than this from its goal has been dropped."""
    undone: bool = True
    """A stage the episode completed (a cube placed, the drawer or window closed, a button
    set) is undone by the policy; off on puzzle-3x3, where pressing toggles the neighbours."""
    undo_distance: float = 0.06
    """A placed cube farther than this from its goal again has been moved off it."""

    def validate(self, prefix: str = "") -> None:
        for name in (
            "table_z",
            "reach_margin",
            "lift_height",
            "drop_goal_distance",
            "undo_distance",
        ):
            value = getattr(self, name)
            ok = math.isfinite(value) and (name == "table_z" or value > 0)
            require(
                ok,
                f"{prefix}env.ogbench.{name}",
                value,
                "must be a finite number" + ("" if name == "table_z" else " > 0"),
            )


WORKSPACE = np.array([[0.25, -0.35], [0.6, 0.35]])  # OGBench's _workspace_bounds, xy


def lights_out(now: np.ndarray, goal: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Which buttons to press (0/1 per button) to turn `now` into `goal`, where a press
    toggles the button and its four neighbours: A x = now ⊕ goal over GF(2), by Gaussian
    elimination (free variables 0). Raises ValueError if the pattern is unreachable."""
    n = rows * cols
    a = np.zeros((n, n + 1), dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        for dr, dc in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)):
            if 0 <= r + dr < rows and 0 <= c + dc < cols:
                a[(r + dr) * cols + c + dc, i] = 1
    a[:, n] = np.asarray(now, dtype=np.uint8) ^ np.asarray(goal, dtype=np.uint8)
    pivots = []
    row = 0
    for col in range(n):
        hit = np.flatnonzero(a[row:, col])
        if hit.size == 0:
            continue
        a[[row, row + hit[0]]] = a[[row + hit[0], row]]
        for other in np.flatnonzero(a[:, col]):
            if other != row:
                a[other] ^= a[row]
        pivots.append(col)
        row += 1
        if row == n:
            break
    if a[row:, n].any():
        raise ValueError("the goal pattern cannot be reached from this board")
    x = np.zeros(n, dtype=np.uint8)
    for r, col in enumerate(pivots):
        x[col] = a[r, n]
    return x

"""Success and speed of a policy, as Appendix E defines them.

Robot time is policy-side time only: the steps an episode took times the control period
(1/80 s in MetaWorld); resets and scene setup between episodes are excluded. Appendix E
counts an episode as *completed* when it ends in success, failure or time-out, so
`episodes_per_hour` is its throughput to the letter; a policy that fails fast scores well
on it, so `throughput` (successful episodes per hour of robot time) is the headline we
compare, with both reported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class SpeedMetrics:
    """Outcome and speed of a set of evaluation episodes."""

    episodes: int
    success_rate: float  # Appendix E: successful episodes / all episodes
    success_ci95: tuple[float, float]  # Wilson score interval of the success rate
    mean_steps_to_success: float  # over successful episodes; NaN when none succeeded
    mean_episode_steps: float  # over all episodes
    robot_hours: float  # Σ steps × control period, resets excluded
    episodes_per_hour: float  # Appendix E: completed episodes per hour of robot time
    throughput: float  # successful episodes per hour of robot time

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["success_ci95"] = list(self.success_ci95)
        return d


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion; (0, 1) for n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def speed_metrics(
    lengths: Sequence[int], successes: Sequence[bool], control_period: float
) -> SpeedMetrics:
    """Metrics of episodes with the given lengths (steps) and outcomes."""
    if len(lengths) != len(successes):
        raise ValueError(f"{len(lengths)} lengths but {len(successes)} outcomes")
    if control_period <= 0:
        raise ValueError(f"control_period must be > 0, got {control_period}")
    steps = np.asarray(lengths, dtype=np.float64)
    ok = np.asarray(successes, dtype=bool)
    n = len(steps)
    k = int(ok.sum())
    hours = float(steps.sum()) * control_period / SECONDS_PER_HOUR
    per_hour = (lambda count: count / hours) if hours > 0 else (lambda count: math.nan)
    return SpeedMetrics(
        episodes=n,
        success_rate=k / n if n else math.nan,
        success_ci95=wilson_interval(k, n),
        mean_steps_to_success=float(steps[ok].mean()) if k else math.nan,
        mean_episode_steps=float(steps.mean()) if n else math.nan,
        robot_hours=hours,
        episodes_per_hour=per_hour(n),
        throughput=per_hour(k),
    )

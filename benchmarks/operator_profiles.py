"""The operator profiles against each other: success and steps, as demonstrations and as
corrections.

    MUJOCO_GL=osmesa python benchmarks/operator_profiles.py [--episodes 50] [--tasks ...]

Per task and profile (`--operator.profile oracle | human`, defaults otherwise):
- demonstrations: `play_episode(env, seed, policy=None, operator=op)` from the seeded reset
  (seeds 0..n-1): the success rate and the mean steps of the successful ones;
- corrections: a random policy acts until the operator takes over (no progress for
  `patience` steps, or a detected failure), then the operator completes the task (seeds
  10 000 + i): the success rate and the mean operator steps of the successful ones.
Spread: the binomial standard error of a rate, the standard error of a mean. Prints a
markdown table.
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import numpy as np

from aloe.envs.base import EnvConfig
from aloe.envs.registry import make_env
from aloe.operators.profiles import make_operator
from aloe.operators.scripted import PROFILES, OperatorConfig
from aloe.policies.chunk_policy import RandomPolicy
from aloe.rollout import Counts, play_episode

TASKS = ("pick-place-v3", "peg-insert-side-v3", "assembly-v3")
CORRECTION_SEED = 10_000


def rate(successes: int, n: int) -> str:
    p = successes / n
    return f"{p:.2f} ± {math.sqrt(p * (1 - p) / n):.2f}"


def mean_steps(steps: list[int]) -> str:
    if not steps:
        return "-"
    sem = np.std(steps, ddof=1) / math.sqrt(len(steps)) if len(steps) > 1 else 0.0
    return f"{np.mean(steps):.0f} ± {sem:.0f}"


def cell(task: str, profile: str, episodes: int) -> tuple[list[Counts], list[Counts]]:
    """Demonstrations and corrections of one profile on one task."""
    env = make_env(EnvConfig(task=task))
    op = make_operator(task, OperatorConfig(profile=profile))
    demos = [play_episode(env, s, policy=None, operator=op) for s in range(episodes)]
    policy = RandomPolicy(horizon=10)
    fixes = [
        play_episode(env, CORRECTION_SEED + i, policy=policy, operator=op) for i in range(episodes)
    ]
    return demos, fixes


def row(task: str, profile: str, demos: list[Counts], fixes: list[Counts]) -> str:
    fixed = [c for c in fixes if c.takeovers]
    return " | ".join(
        [
            task,
            profile,
            rate(sum(c.success for c in demos), len(demos)),
            mean_steps([c.steps for c in demos if c.success]),
            rate(sum(c.success for c in fixed), len(fixed)) if fixed else "-",
            mean_steps([c.operator_steps for c in fixed if c.success]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=50, help="episodes per cell")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*Constant\\(s\\) may be too high.*")
    print(
        "| task | profile | demo success | demo steps to success | correction success "
        "| operator steps per correction |"
    )
    print("|---|---|---|---|---|---|")
    start = time.time()
    for task in args.tasks:
        for profile in PROFILES:
            print("| " + row(task, profile, *cell(task, profile, args.episodes)) + " |", flush=True)
    print(f"\n{args.episodes} episodes per cell, {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()

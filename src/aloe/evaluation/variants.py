"""Is a variant solvable? The noise-free operator's success under one of a backend's
evaluation variants (the `variants` part of its row, `aloe.envs.base.SuiteParts`)."""

from __future__ import annotations

from typing import Any

from aloe.envs.base import EnvConfig
from aloe.envs.registry import backend_of, make_env
from aloe.operators.profiles import make_operator
from aloe.operators.scripted import OperatorConfig
from aloe.rollout import play_episode


def expert_success(task: str, variant: Any, seeds: int = 5, max_steps: int = 300) -> float:
    """Success rate of the noise-free operator on seeds 0..seeds-1 under `variant`: runs of
    the rollout engine with no policy, the operator acting from the start."""
    variants = backend_of(task).suite.variants
    if variants is None:
        raise ValueError(f"task {task!r} has no evaluation variants")
    env = make_env(EnvConfig(task=task, max_steps=max_steps, c_fail=1.0))
    operator = make_operator(task, OperatorConfig(noise_std=0.0), seed=0)
    with variants.applied(env, variant):
        runs = [play_episode(env, seed, policy=None, operator=operator) for seed in range(seeds)]
    return sum(run.success for run in runs) / seeds

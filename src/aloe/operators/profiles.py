"""The operator profiles (`OperatorConfig.profile`): the one place an operator is built."""

from __future__ import annotations

import dataclasses

from aloe.operators.base import Operator
from aloe.operators.human import HumanOperator
from aloe.operators.scripted import PROFILES, OperatorConfig, ScriptedOperator


def make_operator(task: str, cfg: OperatorConfig, seed: int = 0) -> Operator:
    """The operator `cfg.profile` names for `task` (a task, a suite or a list): `oracle`, the
    noisy scripted expert; `human`, a simulated person carrying out the noise-free expert."""
    if cfg.profile not in PROFILES:
        raise ValueError(f"unknown operator profile {cfg.profile!r}; validate the config first")
    from aloe.envs.tasks import backend, task_list

    if backend(task_list(task)[0]) == "ogbench":  # OGBench's oracles, chained by a planner
        from aloe.operators.composed import make_composed

        return make_composed(task, cfg, seed)
    if cfg.profile == "human":
        plan = ScriptedOperator(task, dataclasses.replace(cfg, noise_std=0.0, delay_steps=0), seed)
        return HumanOperator(plan, cfg.human, seed)
    return ScriptedOperator(task, cfg, seed)

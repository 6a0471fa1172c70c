"""The operator profiles (`OperatorConfig.profile`): the one place an operator is built, by
the row of the task's simulator (`aloe.envs.base.Backend.make_operator`)."""

from __future__ import annotations

from aloe.envs.registry import backend_of
from aloe.operators.base import Operator
from aloe.operators.scripted import PROFILES, OperatorConfig


def make_operator(task: str, cfg: OperatorConfig, seed: int = 0) -> Operator:
    """The operator `cfg.profile` names for `task` (a task, a suite or a list): `oracle`, the
    noisy scripted expert; `human`, a simulated person carrying out the noise-free expert;
    `clumsy`, that person three times as error-prone (`aloe.operators.human.clumsy`)."""
    if cfg.profile not in PROFILES:
        raise ValueError(f"unknown operator profile {cfg.profile!r}; validate the config first")
    operator: Operator = backend_of(task).make_operator(task, cfg, seed)
    return operator

"""The improvement indicator an advantage-conditioned actor reads (RECAP, π*0.6, Physical
Intelligence 2025; the algorithm is `aloe.algos.recap`), and classifier-free guidance.

An actor conditioned on advantage takes one more input per row: `NEGATIVE`, `POSITIVE`, or
`DROPPED` (the indicator left out, so that the same network is also the unconditional
policy). The compact flow actor adds a learned embedding of it to the instruction token; a
LeRobot VLA reads it as text after the task's prompt (`prompt`), so the VLA is unchanged.

An actor acts on its `Guidance`: the indicator it is conditioned on (positive) and β_cfg.
With β = 1 it is the conditional policy; with β ≠ 1 every flow step combines the conditional
and the unconditional velocity (`guided_velocity`), both computed in one batched forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from torch import Tensor

from aloe.policies.base import Actor

NEGATIVE, POSITIVE, DROPPED = 0, 1, 2
NUM_INDICATORS = 3
# what a VLA's prompt says of each indicator (nothing when it is dropped)
PROMPT_TEXT = {NEGATIVE: "Advantage: negative", POSITIVE: "Advantage: positive", DROPPED: ""}


@dataclass(frozen=True)
class Guidance:
    """What an advantage-conditioned actor acts on (collection, evaluation, serving)."""

    indicator: int = POSITIVE
    """The indicator every chunk is sampled under."""
    beta: float = 1.0
    """β_cfg of `guided_velocity`; 1 = the conditional policy alone (one forward)."""

    @property
    def guided(self) -> bool:
        """The unconditional branch is needed: β ≠ 1."""
        return self.beta != 1.0


@runtime_checkable
class IndicatorActor(Actor, Protocol):
    """An `Actor` that can be conditioned on the indicator (the compact `FlowPolicy`, the
    `LeRobotActor`): its `flow_loss_per_sample` also takes `indicator`, each row's
    indicator (B,) (None: dropped), and it samples under its `guidance`."""

    guidance: Guidance | None

    def use_indicator(self, guidance: Guidance) -> None:
        """Condition on the indicator from now on, and act on `guidance`."""
        ...

    def flow_loss_per_sample(self, *args: Any, **kwargs: Any) -> Tensor:
        """`Actor.flow_loss_per_sample`, with the keyword `indicator` too."""
        ...


def guided_velocity(cond: Tensor, uncond: Tensor, beta: float) -> Tensor:
    """Classifier-free guidance of one flow step (Ho & Salimans 2022; π*0.6's CFG):
    v = v_uncond + β (v_cond − v_uncond), from the velocities under the indicator and
    without it. β = 1 gives v_cond; β > 1 extrapolates away from the unconditional field."""
    return uncond + beta * (cond - uncond)  # CFG: v = v_u + β (v_c − v_u)


def prompt(instruction: str, indicator: int) -> str:
    """A task's prompt with the indicator appended ("…\\nAdvantage: positive"), or alone
    when the indicator is dropped."""
    text = PROMPT_TEXT[indicator]
    return instruction if not text else f"{instruction.rstrip()}\n{text}"

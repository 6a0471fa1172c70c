"""The algorithm table: each algorithm's name -> what the rest of the package needs to know.

The trainer, `aloe.load_run`, the config's checks, the evaluation suite and `aloe compare`
read an algorithm only through its row. Adding an algorithm is one module in `aloe.algos`
(its config, losses, learner and per-iteration update) and one row here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from aloe.algos import aloe, awr, dagger, ppo_sbc
from aloe.algos.context import CollectContext, Learner, LearnerParts, UpdateContext

if TYPE_CHECKING:
    from aloe.collect import CollectStats
    from aloe.config import TrainConfig

ValueKind = Literal["q", "state"]


def shared_batch(cfg: TrainConfig) -> tuple[int, str]:
    """Every update draws aloe.batch_size chunks (the BC warm start included)."""
    return cfg.aloe.batch_size, "aloe.batch_size"


@dataclass(frozen=True)
class Algorithm:
    """One row of the table."""

    label: str
    """Its name in reports (`aloe compare`'s page)."""
    build_learner: Callable[[LearnerParts], Learner]
    """Its learner around the run's actor (`aloe.run.build_learner` gives the parts)."""
    update: Callable[[UpdateContext], dict[str, float]] | None
    """Its per-iteration update after collection, returning its metrics.jsonl columns;
    None: the BC warm start (iteration 0) is the whole run."""
    collect: Callable[[CollectContext], CollectStats] | None = None
    """Its own collection of an iteration; None: π_{k−1} acts with the operator watching
    and taking over (Algorithm 1, line 3)."""
    value: ValueKind | None = None
    """The value function evaluation reads: "q" the chunked Q ensemble (Q traces, OPE of
    Q^π and V^π), "state" a learned V(s) (OPE of V^π), None none."""
    weighted: bool = False
    """Its actor update weights the data by advantage (`evaluation.weights` reports how)."""
    matched_budget: str | None = None
    """The `aloe train` option that `aloe compare` sets to the mean environment steps per
    iteration of the seed's operator-loop runs (an on-policy algorithm's rollout budget)."""
    update_batch: Callable[[TrainConfig], tuple[int, str]] = shared_batch
    """The largest batch one of its updates holds, and the field that sets it (the
    config's memory check, `aloe.config.activation_bytes`)."""

    @property
    def iterates(self) -> bool:
        """It has iterations after the warm start."""
        return self.update is not None

    @property
    def with_operator(self) -> bool:
        """Its iterations collect with the operator in the loop."""
        return self.iterates and self.collect is None


ALGORITHMS: dict[str, Algorithm] = {
    "aloe": Algorithm("ALOE", aloe.build_learner, aloe.update, value="q", weighted=True),
    "awr": Algorithm("AWR", awr.build_learner, awr.update, value="state", weighted=True),
    "dagger": Algorithm("HG-DAgger", aloe.build_learner, dagger.update),
    "bc": Algorithm("BC", aloe.build_learner, update=None),
    "ppo-sbc": Algorithm(
        "PPO+SBC",
        ppo_sbc.build_learner,
        ppo_sbc.update,
        collect=ppo_sbc.collect_rollouts,
        value="state",
        matched_budget="--ppo.rollout-steps",
        update_batch=ppo_sbc.update_batch,
    ),
}

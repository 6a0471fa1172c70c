"""The algorithm table: each algorithm's name -> what the rest of the package needs to know.

The trainer, `aloe.load_run`, the config's checks and presets, `aloe train`'s options, the
DDP learner, the evaluation suite and `aloe compare` read an algorithm only through its row.
Adding an algorithm is one module in `aloe.algos` (its config, preset, losses, learner and
per-iteration update), one row here, and its settings' field in `aloe.config.TrainConfig`
(the row's `group`; a test checks that the two agree).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from aloe.algos import aloe, aloe_config, awr, dagger, ppo_sbc, recap
from aloe.algos.context import CollectContext, Learner, LearnerParts, RunConfig, UpdateContext
from aloe.algos.optimised import OptimConfig
from aloe.algos.recap_math import Labels
from aloe.data import Frames

if TYPE_CHECKING:
    from aloe.collect import CollectStats

ValueKind = Literal["q", "state"]


def chunked_q(settings: Any) -> ValueKind:
    """A chunked Q ensemble, whatever the settings."""
    return "q"


def state_value(settings: Any) -> ValueKind:
    """A learned V(s), whatever the settings."""
    return "state"


def no_value(settings: Any) -> None:
    """No value function evaluation could read."""


def shared_batch(optim: OptimConfig, settings: Any) -> tuple[int, str]:
    """Every update draws optim.batch_size chunks (the BC warm start included)."""
    return optim.batch_size, "optim.batch_size"


def one_sample(settings: Any) -> int:
    """An update holds one chunk per row of its batch."""
    return 1


def value_samples(settings: aloe_config.AloeConfig) -> int:
    """ALOE's V^π holds M sampled chunks per row (Eq. 10)."""
    return settings.num_value_samples


@dataclass(frozen=True)
class Algorithm:
    """One row of the table."""

    label: str
    """Its name in reports (`aloe compare`'s page)."""
    build_learner: Callable[[LearnerParts[Any]], Learner]
    """Its learner around the run's actor (`aloe.run.build_learner` gives the parts)."""
    update: Callable[[UpdateContext[Any]], dict[str, float]] | None
    """Its per-iteration update after collection, returning its metrics.jsonl columns;
    None: the BC warm start (iteration 0) is the whole run."""
    group: str | None = None
    """Its own settings' field of the run's config and `aloe train` option group
    (`--aloe.*`); None: it has no settings of its own."""
    config: type | None = None
    """The dataclass of its own settings (the type of the `group` field)."""
    preset: Callable[[str], Any] | None = None
    """Its own settings in a named preset (`aloe.config.preset`)."""
    collect: Callable[[CollectContext[Any]], CollectStats] | None = None
    """Its own collection of an iteration; None: π_{k−1} acts with the operator watching
    and taking over (Algorithm 1, line 3)."""
    value_of: Callable[[Any], ValueKind | None] = no_value
    """The value function evaluation reads, from its own settings: "q" the chunked Q
    ensemble (Q traces, OPE of Q^π and V^π, action-level OPE), "state" a learned V(s)
    (OPE of V^π), None none. Read through `value_kind`."""
    labels_at: Callable[[Learner, RunConfig, Frames, np.ndarray], Labels] | None = None
    """Its improvement indicator at buffer rows as its labels define it (RECAP's I_t and
    A_t), scored against the restored-rollout truth by the action-level OPE
    (`aloe.evaluation.indicator`); None: it labels nothing."""
    weighted: bool = False
    """Its actor update weights the data by advantage (`evaluation.weights` reports how)."""
    matched_budget: str | None = None
    """The `aloe train` option that `aloe compare` sets to the mean environment steps per
    iteration of the seed's operator-loop runs (an on-policy algorithm's rollout budget)."""
    update_batch: Callable[[OptimConfig, Any], tuple[int, str]] = shared_batch
    """The largest batch one of its updates holds, and the field that sets it, from the
    shared and its own settings (the config's memory check,
    `aloe.config_machine.activation_bytes`)."""
    samples_per_row: Callable[[Any], int] = one_sample
    """Chunks an update holds per row of that batch, from its own settings."""
    trains_actor: bool = True
    """It trains the run's `Actor` through the protocol alone, so any actor kind will do
    (the LeRobot adapter); False: it reads the compact flow actor's internals."""
    sharding: Callable[[Any], None] | None = None
    """Training on shards of the batch over several learner processes (its losses are
    means of per-row terms): a check of its own settings that raises UsageError where
    they forbid it; None: it trains on one process."""
    lerobot_check: Callable[[Any], None] | None = None
    """With `actor_kind lerobot` (where `trains_actor`): a check of its own settings that
    raises UsageError where they read the compact flow actor's internals; None: none do."""
    ignores: tuple[str, ...] = ()
    """Fields of the run's shared groups that it never reads (`critic.num_q`, or a whole
    group, `critic`): `aloe train --algo NAME --help` leaves them out, as it leaves out
    the other algorithms' own groups."""

    @property
    def iterates(self) -> bool:
        """It has iterations after the warm start."""
        return self.update is not None

    @property
    def with_operator(self) -> bool:
        """Its iterations collect with the operator in the loop."""
        return self.iterates and self.collect is None

    def settings(self, cfg: Any) -> Any:
        """Its own settings in a run's config (None when it has none)."""
        return None if self.group is None else getattr(cfg, self.group)

    def value_kind(self, cfg: Any) -> ValueKind | None:
        """The value function a run of config `cfg` learns (`value_of` its settings): what
        the suite, Q traces, both OPEs, `aloe.load_run` and `aloe compare` read."""
        return self.value_of(self.settings(cfg))


def no_check(settings: Any) -> None:
    """Settings that never forbid sharding."""


# what a learner that trains only the actor (Eq. 16) never reads: its idle critic's shape
# and rate, γ (a BC step reads no reward), and the bound on values that no BC metric is
ACTOR_ONLY = ("critic", "optim.critic_lr", "optim.gamma", "optim.q_abs_max")


ALGORITHMS: dict[str, Algorithm] = {
    "aloe": Algorithm(
        "ALOE",
        aloe.build_learner,
        aloe.update,
        group="aloe",
        config=aloe_config.AloeConfig,
        preset=aloe_config.preset,
        value_of=chunked_q,
        weighted=True,
        samples_per_row=value_samples,
        sharding=aloe_config.check_sharding,
        lerobot_check=aloe_config.check_lerobot,
    ),
    "awr": Algorithm(
        "AWR",
        awr.build_learner,
        awr.update,
        group="awr",
        config=awr.AwrConfig,
        preset=awr.preset,
        value_of=state_value,
        weighted=True,
        ignores=("critic.num_q",),  # one distributional V(s)
    ),
    "dagger": Algorithm(
        "HG-DAgger",
        aloe.build_actor_learner,
        dagger.update,
        group="dagger",
        config=dagger.DaggerConfig,
        preset=dagger.preset,
        sharding=no_check,
        ignores=ACTOR_ONLY,
    ),
    "bc": Algorithm(
        "BC", aloe.build_actor_learner, update=None, sharding=no_check, ignores=ACTOR_ONLY
    ),
    "ppo-sbc": Algorithm(
        "PPO+SBC",
        ppo_sbc.build_learner,
        ppo_sbc.update,
        group="ppo",
        config=ppo_sbc.PpoConfig,
        preset=ppo_sbc.preset,
        collect=ppo_sbc.collect_rollouts,
        value_of=state_value,
        matched_budget="--ppo.rollout-steps",
        update_batch=ppo_sbc.update_batch,
        trains_actor=False,
        ignores=("critic.num_q",),  # one V(s)
    ),
    "recap": Algorithm(
        "RECAP",
        recap.build_learner,
        recap.update,
        group="recap",
        config=recap.RecapConfig,
        preset=recap.preset,
        value_of=recap.value_kind,
        labels_at=recap.labels_at,
        samples_per_row=recap.samples_per_row,
    ),
}


def unread_fields(algo: str) -> dict[str, str]:
    """The config fields (dotted) an `algo` run never reads -> why: the other algorithms'
    own groups, and its row's `ignores`."""
    unread = {
        row.group: f"an option of --algo {other}, which an --algo {algo} run never reads"
        for other, row in ALGORITHMS.items()
        if other != algo and row.group is not None
    }
    return unread | dict.fromkeys(ALGORITHMS[algo].ignores, f"an --algo {algo} run never reads it")


def unread_option(token: str, algo: str) -> str | None:
    """Why an `algo` run never reads the command-line option `token` (`--aloe.beta` or
    `--aloe.beta=3` with `--algo awr`), or None where it reads it."""
    flag = token.partition("=")[0].replace("_", "-")
    for name, why in unread_fields(algo).items():
        option = f"--{name.replace('_', '-')}"
        if flag == option or flag.startswith(f"{option}."):
            return why
    return None

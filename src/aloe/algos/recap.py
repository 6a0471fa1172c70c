"""RECAP: advantage-conditioned flow matching (π*0.6, "a VLA that learns from experience",
Physical Intelligence 2025), on ALOE's loop, data and actor.

Where ALOE weights each data chunk by exp(A/β), RECAP asks the critic for one bit per step:
the improvement indicator I_t = 1[A_t > ε_ℓ]. The actor is trained on all the data by flow
matching with I_t as one more input, left out at random, so that one network is both the
conditional policy π(a | s, ℓ, I) and the unconditional one; it acts conditioned on
"positive", optionally with classifier-free guidance of weight β_cfg. An iteration:

1. value steps: the advantage source's value, on the whole buffer D_k;
   `advantage value`: RECAP's own distributional V(s, ℓ) over bins, cross-entropy on the
   Monte-Carlo returns of all data (AWR's value, `aloe.algos.awr`, with `recap.num_bins`);
   `advantage q`: ALOE's chunked critic, Eq. 7–8 (`AloeLearner.critic_step`);
2. labels: every buffer row's A_t and I_t (`aloe.algos.recap_math`), once;
   value: A_t = Σ_{k<n} γ^k r_{t+k} + γ^n V(s_{t+n}) − V(s_t), n = `recap.n_step`;
   q: A_t = Q_pess(s_t, a_{t:t+h}) − V^π(s_t) (Eq. 9–10, V^π from the acting policy);
   ε_ℓ the `positive_percentile`-th percentile of task ℓ's A; the operator's rows positive;
3. actor steps: E_D ||ε − a − f_θ(ã, s, ℓ, I)||² (Eq. 15 unweighted, i.e. Eq. 16 with I as
   an input), I dropped with probability `drop_prob`.

The BC warm start trains the unconditional policy (I dropped). The indicator's embeddings
start at zero, so every indicator is the unconditional policy until the labels separate
them: iteration 0 acts exactly as BC.

Defaults and why (docs/concepts.md, "RECAP"): 30 % positive (`positive_percentile` 70: the
paper sets ε_ℓ so that roughly that share of the data is positive; RLinf's default), n = h
(a lookahead of one action chunk, as RLinf's N = 10 at 10-step chunks), 201 bins (the
paper's), dropout 0.1 (RLinf's, the usual CFG rate), β_cfg = 1 (plain conditional: no
extra cost).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, get_args

import numpy as np
import torch
from torch import Tensor

from aloe import data as D
from aloe.algos import aloe, awr
from aloe.algos.aloe import AloeLearner
from aloe.algos.aloe_config import AloeConfig
from aloe.algos.awr import AwrConfig, AwrLearner
from aloe.algos.bc import bc_loss
from aloe.algos.context import Learner, LearnerParts, RunConfig, UpdateContext, step_means
from aloe.algos.optimised import to_device
from aloe.algos.recap_math import (
    Labels,
    drop_indicators,
    forced_positive,
    indicator,
    indicators,
    inside_fragment,
    n_step_advantage,
    positive_shares,
)
from aloe.datasets.sampler import ChunkSampler
from aloe.errors import require
from aloe.nn import evaluating
from aloe.policies.indicator import DROPPED, POSITIVE, Guidance, IndicatorActor

AdvantageSource = Literal["value", "q"]
S = TypeVar("S")


@dataclass
class RecapConfig:
    """RECAP's own settings (`--recap.*`); optimiser, batch size and γ are every learner's
    (`optim.*`), the critic's shape `critic.*` (its value heads, its Q ensemble)."""

    advantage: AdvantageSource = "value"
    """Where A comes from: value = RECAP's own distributional V(s, ℓ) on Monte-Carlo returns
    (the paper's), A the n-step return minus V; q = ALOE's chunked critic,
    A = Q_pess(s, a_data) − V^π(s) (Eq. 9–10)."""
    n_step: int | None = None
    """n of the n-step advantage (`advantage value`); None = the run's chunk length h, a
    lookahead of one chunk (RLinf: N = 10 at 10-step chunks). `advantage q` reads the chunk."""
    positive_percentile: float = 70.0
    """ε_ℓ is this percentile of task ℓ's advantages: 70 labels the top 30 % positive (the
    paper's rough share, RLinf's default); intervention rows are left out of it."""
    interventions_positive: bool = True
    """The operator's steps (source human) are positive whatever their advantage (paper)."""
    drop_prob: float = 0.1
    """Probability that a training row's indicator is left out, so that the network is also
    the unconditional policy that classifier-free guidance needs (RLinf: 0.1; CFG: 0.1–0.2)."""
    cfg_beta: float = 1.0
    """β_cfg of acting: v = v_uncond + β (v_cond − v_uncond) at every flow step; 1 = the
    conditional policy alone (one forward per step), > 1 sharper (two, in one batch)."""
    num_bins: int = 201
    """Atoms of the distributional V (paper: 201) over Eq. 14's return range (as AWR's)."""
    value_steps: int = 500
    """Value (or critic, `advantage q`) updates per iteration (as `aloe.critic_steps`)."""
    actor_steps: int = 250
    """Indicator-conditioned flow-matching updates per iteration (as `aloe.actor_steps`)."""
    num_value_samples: int = 4
    """M, chunks of the acting policy per state for V^π (`advantage q`, as `aloe.*`)."""

    def validate(self, prefix: str = "") -> None:
        """Raise UsageError naming the first field out of range, `recap.drop_prob (1.5): must
        be in [0, 1)`; `prefix` leads the name ("config field " for a run's config)."""
        checks: list[tuple[str, bool, str]] = [
            ("advantage", self.advantage in get_args(AdvantageSource), "must be value or q"),
            ("n_step", self.n_step is None or self.n_step >= 1, "must be >= 1, or None (= h)"),
            (
                "positive_percentile",
                0.0 <= self.positive_percentile < 100.0,
                "must be in [0, 100) (100 would label no step positive)",
            ),
            ("drop_prob", 0.0 <= self.drop_prob < 1.0, "must be in [0, 1)"),
            ("cfg_beta", math.isfinite(self.cfg_beta) and self.cfg_beta >= 0, "must be >= 0"),
            ("num_bins", self.num_bins >= 2, "must be >= 2"),
            ("value_steps", self.value_steps >= 0, "must be >= 0"),
            ("actor_steps", self.actor_steps >= 0, "must be >= 0"),
            ("num_value_samples", self.num_value_samples >= 1, "must be >= 1"),
        ]
        for name, ok, allowed in checks:
            require(ok, f"{prefix}recap.{name}", getattr(self, name), allowed)


def preset(name: str) -> RecapConfig:
    """RECAP's update budget in preset `name` (smoke | default | paper | mt10): ALOE's, so
    that the two differ in how they use the critic alone."""
    if name == "smoke":
        return RecapConfig(value_steps=20, actor_steps=10, num_value_samples=2)
    if name in ("default", "mt10"):
        return RecapConfig(value_steps=400, actor_steps=200, num_value_samples=2)
    return RecapConfig()


def samples_per_row(settings: RecapConfig) -> int:
    """Chunks a labelling batch holds per row: M with `advantage q` (V^π), else one."""
    return settings.num_value_samples if settings.advantage == "q" else 1


def value_kind(settings: RecapConfig) -> Literal["state", "q"]:
    """The value evaluation reads: the advantage source's, AWR's V(s) or ALOE's critic."""
    return "state" if settings.advantage == "value" else "q"


# The learner: the advantage source's (AWR's value or ALOE's critic, with the actor and its
# optimiser), the labels of the buffer, and RECAP's actor step.


class RecapLearner:
    """RECAP around its advantage source's learner `base` (`AwrLearner` for `advantage
    value`, `AloeLearner` for `q`), which holds the actor, its optimiser, the value network
    and the generator; RECAP adds the labels and its actor step. The labels are a function
    of the buffer and the value, recomputed every iteration; `state_dict` is the base's and
    the last labels' thresholds ε_ℓ, which evaluation reads (`labels_at`)."""

    def __init__(self, base: AwrLearner | AloeLearner, settings: RecapConfig) -> None:
        self.base = base
        self.settings = settings
        actor = base.actor
        if not isinstance(actor, IndicatorActor):  # `build_learner` conditions it
            raise TypeError(f"RECAP needs an indicator-conditioned actor, not {type(actor)}")
        self.actor = actor
        self.critic = base.critic
        self.device = base.device
        self.generator = base.generator  # the same generator: the trainer reseeds the base's
        self.label_of = torch.zeros(0, dtype=torch.long, device=self.device)  # by frame index
        self.thresholds: dict[int, float] = {}  # ε_ℓ of the last labels, by task

    def value(self, state: Tensor, task_index: Tensor) -> Tensor:
        """V(s, ℓ) (B,) of `advantage value`: the state value evaluation reads (as AWR's)."""
        if not isinstance(self.base, AwrLearner):
            raise TypeError("recap.advantage q learns a chunked Q critic, not a state value")
        return self.base.value(state, task_index)

    def value_step(self, batch: D.ChunkBatch) -> dict[str, float]:
        """One update of the advantage source: V's cross-entropy, or the critic's Eq. 7–8."""
        if isinstance(self.base, AwrLearner):
            return self.base.value_step(batch)
        return self.base.critic_step(batch)

    def bc_step(
        self, batch: D.ChunkBatch, valid_rows_mask: Tensor | None = None
    ) -> dict[str, float]:
        """The warm start's behaviour cloning (Eq. 16), the indicator dropped."""
        return self.base.bc_step(batch, valid_rows_mask)

    def advantages(self, chunks: D.ChunkBatch, inside: Tensor) -> tuple[Tensor, ...]:
        """(A, the data's value, V) (B,) of a batch of the labelling sampler's chunks."""
        b = to_device(chunks, self.device)
        with torch.no_grad(), evaluating(self.critic):
            if isinstance(self.base, AwrLearner):
                v = self.base.value(b.state, b.task_index)
                v_next = self.base.value(b.next_state, b.task_index)
                adv = n_step_advantage(b, v, v_next, inside.to(self.device))
                return adv, adv + v, v
            q = self.base.q_data(b)  # Eq. 9
            v = self.base.value(b)  # Eq. 10, from π as it acts (the indicator, β_cfg)
            return q - v, q, v  # Eq. 10: A = Q_pess − V^π

    def row_advantages(
        self, frames: D.Frames, chunks: ChunkSampler, rows: np.ndarray, batch: int
    ) -> tuple[np.ndarray, ...]:
        """(A, the data's value, V) (R,) of buffer `rows` from the chunks (of n =
        `chunks.horizon` steps) that start at them, `batch` rows at a time."""
        starts, ends = frames.fragment_bounds()
        every = np.arange(frames.rows)
        inside = inside_fragment(np.repeat(ends, ends - starts), every, chunks.horizon)
        parts = [
            self.advantages(chunks.chunks_at(r), torch.as_tensor(inside[r]))
            for r in np.array_split(rows, max(1, -(-len(rows) // batch)))
        ]
        return tuple(torch.cat(p).cpu().numpy() for p in zip(*parts, strict=True))

    def label(self, frames: D.Frames, chunks: ChunkSampler, batch: int) -> dict[str, float]:
        """Every buffer row's A_t and I_t (`row_advantages`); the labels kept by frame index
        for the actor steps, the thresholds ε_ℓ by task. Returns the iteration's label
        metrics."""
        own = self.settings
        every = np.arange(frames.rows)
        adv, value_data, v = self.row_advantages(frames, chunks, every, batch)
        source = np.asarray(frames[D.SOURCE]).astype(str)
        labels, eps = indicators(
            adv,
            np.asarray(frames[D.TASK]),
            source == "human",
            own.positive_percentile,
            own.interventions_positive,
        )
        self.thresholds = eps
        index = np.asarray(frames[D.INDEX], dtype=np.int64)
        table = np.full(int(index.max()) + 1, DROPPED, dtype=np.int64)
        table[index] = labels
        self.label_of = torch.as_tensor(table, device=self.device)
        return {
            "q_pess_mean": float(value_data.mean()),
            "v_mean": float(v.mean()),
            "advantage_mean": float(adv.mean()),
            "advantage_std": float(adv.std()),
            "advantage_threshold": float(np.mean(list(eps.values()))) if eps else math.nan,
            **positive_shares(labels, source),
        }

    def actor_step(self, batch: D.ChunkBatch) -> dict[str, float]:
        """One flow-matching update with each row's indicator (Eq. 15 unweighted, i.e.
        Eq. 16 conditioned on I), left out with probability `drop_prob`."""
        b = to_device(batch, self.device)
        base = self.base
        labels = self.label_of[b.global_index]
        shown = drop_indicators(labels, self.settings.drop_prob, self.generator)
        base.actor_module.train()
        per_sample = self.actor.flow_loss_per_sample(
            b.state, b.task_index, b.actions, b.valid, self.generator, b.images, indicator=shown
        )
        loss, metrics = bc_loss(per_sample)  # RECAP: E_D ||ε − a − f_θ(ã, s, ℓ, I)||²
        metrics["actor/dropped_frac"] = float((shown != labels).float().mean())
        metrics["actor/positive_frac"] = float((labels == POSITIVE).float().mean())
        return base.actor_opt.step(loss, metrics, "actor")

    def state_dict(self) -> dict[str, Any]:
        return {**self.base.state_dict(), "recap_thresholds": dict(self.thresholds)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Also reads checkpoints written before the thresholds were kept (none)."""
        self.base.load_state_dict(state)
        eps = state.get("recap_thresholds") or {}
        self.thresholds = {int(k): float(v) for k, v in eps.items()}


def build_learner(parts: LearnerParts[RecapConfig]) -> RecapLearner:
    """The actor conditioned on the indicator (acting on positive with β_cfg), and the
    advantage source's learner around it: AWR's distributional V with `recap.num_bins`
    atoms, or ALOE's chunked critic with `recap.num_value_samples` chunks for V^π."""
    own = parts.settings
    actor = parts.actor
    if not isinstance(actor, IndicatorActor):
        raise TypeError(f"RECAP conditions its actor on an indicator, not a {type(actor).__name__}")
    actor.use_indicator(Guidance(POSITIVE, own.cfg_beta))  # before the optimiser is built
    base: AwrLearner | AloeLearner
    if own.advantage == "value":
        base = awr.build_learner(with_settings(parts, AwrConfig(num_bins=own.num_bins)))
    else:
        critic = AloeConfig(num_value_samples=own.num_value_samples, update_sampler="flow")
        base = aloe.build_learner(with_settings(parts, critic))
    return RecapLearner(base, own)


def with_settings(parts: LearnerParts[Any], settings: S) -> LearnerParts[S]:
    """The same parts for the advantage source's learner, with its own settings."""
    fields = {f.name: getattr(parts, f.name) for f in dataclasses.fields(parts)}
    return LearnerParts(**{**fields, "settings": settings})


# One iteration: value steps, labels, actor steps.

# metrics.jsonl column -> the learner metric it averages
VALUE_METRICS = {"value": awr.VALUE_METRICS, "q": aloe.CRITIC_METRICS}
ACTOR_METRICS = {
    "actor_flow_loss": "bc/loss",
    "indicator_dropped_frac": "actor/dropped_frac",
}
LABEL_COLUMNS = (
    "advantage_threshold",
    "positive_frac",
    *(f"positive_{source}_frac" for source in D.SOURCES),
)


def update(ctx: UpdateContext[RecapConfig]) -> dict[str, float]:
    """recap.value_steps value (or critic) steps on the whole buffer, the buffer's labels,
    then recap.actor_steps indicator-conditioned actor steps; ALOE's columns (the weights
    null) and the share of positive labels per source."""
    learner = ctx.learner_as(RecapLearner)
    own = ctx.settings
    k = ctx.iteration
    if isinstance(learner.base, AloeLearner):
        aloe.fit_buffer_normalizer(learner.base, ctx.frames)
    sampler = ctx.sampler(ctx.frames)
    value = ctx.steps(own.value_steps, learner.value_step, sampler, f"value[{k}]")
    chunks = labelling_chunks(ctx.cfg, own, ctx.frames, learner.device, sampler)
    labels = learner.label(ctx.frames, chunks, ctx.cfg.optim.batch_size)
    actor = ctx.steps(own.actor_steps, learner.actor_step, sampler, f"actor[{k}]")
    row = dict.fromkeys(aloe.UPDATE_COLUMNS, math.nan)
    row |= step_means(value, VALUE_METRICS[own.advantage]) | labels
    row |= step_means(actor, ACTOR_METRICS)
    if own.advantage == "value":
        row["q_member_std"] = math.nan  # one V(s): no spread
    return row


def labelling_chunks(
    cfg: RunConfig,
    own: RecapConfig,
    frames: D.Frames,
    device: torch.device,
    sampler: ChunkSampler | None = None,
) -> ChunkSampler:
    """The chunks the labels read: with `advantage q` the update's own `sampler` (h steps,
    with the clock and pixels its critic and actor read; without one, h-step chunks of the
    frames with the clock); with `value` the n-step chunks of the buffer's states (V reads
    nothing else)."""
    gamma = cfg.optim.gamma
    if own.advantage == "q":
        clock = cfg.clock_limit()
        return sampler or ChunkSampler(
            frames, horizon=cfg.horizon, gamma=gamma, device=device, time_limit=clock
        )
    states = D.Frames({k: v for k, v in frames.items() if k not in PIXEL_COLUMNS})
    return ChunkSampler(states, horizon=own.n_step or cfg.horizon, gamma=gamma, device=device)


PIXEL_COLUMNS = (D.PIXELS, D.NEXT_PIXELS_ROW)


def labels_at(learner: Learner, cfg: RunConfig, frames: D.Frames, rows: np.ndarray) -> Labels:
    """The run's labels at buffer `rows` as its last iteration defined them (evaluation's
    row of the table, `Algorithm.labels_at`): A_t from its value as saved, by the labels'
    own chunks and equations (`RecapLearner.row_advantages`), and I_t = 1[A_t > ε_ℓ] with
    that iteration's ε_ℓ (`RecapLearner.thresholds`), the operator's rows positive.

    With `advantage value` this is the iteration's label exactly (V is saved as the labels
    read it); with `q`, V^π is drawn afresh from the actor as saved (after the iteration's
    actor steps). A checkpoint without thresholds (written before they were kept, or the
    warm start's) has the whole buffer labelled first, with the value as saved."""
    if not isinstance(learner, RecapLearner):
        raise TypeError(f"RECAP's labels need a RecapLearner, not {type(learner).__name__}")
    own = learner.settings
    chunks = labelling_chunks(cfg, own, frames, learner.device)
    if not learner.thresholds:
        learner.label(frames, chunks, cfg.optim.batch_size)
    adv, _, _ = learner.row_advantages(frames, chunks, rows, cfg.optim.batch_size)
    task = np.asarray(frames[D.TASK])[rows]
    human = np.asarray(frames[D.SOURCE])[rows].astype(str) == "human"
    forced = forced_positive(human, own.interventions_positive)
    positive = indicator(adv, task, forced, learner.thresholds) == POSITIVE
    eps = np.array([learner.thresholds.get(int(t), math.nan) for t in task])
    return Labels(adv, positive, ~forced, eps, own.positive_percentile)

"""ALOE's settings, learner and update, in the order of Algorithm 1.

Critic (lines 4–9): sample a' ~ π_θ(·|s_{t+n}, ℓ), TD target y (Eq. 7), ensemble loss
(Eq. 8), Polyak target update. Actor (lines 10–15): Q_pess of the data chunk (Eq. 9),
V^π by sampling π_θ, advantage (Eq. 10), clipped exponential weight (Eq. 11), weighted
flow-matching loss (Eq. 15). Warm start (line 1): behaviour cloning (Eq. 16). The
equations themselves are pure functions in `aloe.algos.aloe_math`.

β and the reward scale. Eq. 14 pays −1 per step, 0 at a successful end and −C_fail
(the mean episode length, ~100 or more) at a failed end, so Q ≈ −(discounted steps to go)
− γ^T·C_fail·P(fail): of order −C_fail, with |Q| ≤ 1/(1 − γ) + C_fail. A chunk that
finishes k steps sooner has an advantage of about k; one that avoids a failure has an
advantage of order C_fail. β = 5 therefore gives a chunk 5 steps faster weight e, while
with ε_clip = 3 anything beyond |A| = 15 (every success-versus-failure distinction)
saturates at e^{±3} ≈ 20× / 0.05×: graded among near-equal chunks, bounded influence
otherwise. Scale β with the reward; with `normalize_advantage` A is in units of its
batch std and β ≈ 1 is the analogue.

Truncated chunks (`value_steps`). A data chunk stops at its fragment's end (a success, a
labelled failure, a takeover cut, a time limit): n < h executed steps, and the critic scores
it over those (Eq. 7's n-step target). V^π's chunks are sampled whole. At a state a few steps
before a fragment's end the buffer holds only short chunks, so the critic's value for a full
chunk there is an extrapolation. Measured on the human-profile runs (issue 13): at states
whose data chunk reaches a labelled failure, the critic scores π's full chunks 8–15 below
their true Q^π, so the failing chunk gets A of +6 to +20 (true: −2.3 to +0.6), up to the
largest weight of the buffer. With `value_steps = "data"` π's chunks are scored over the
same n steps (Q(s, a'_{0:n}), the value of the same n-step option), which the critic has
been trained on there: A of −0.4 to +1.5.

The time limit is a failure (Eq. 14's −C_fail, no bootstrap), as Section IV-A labels a cut
policy fragment: `env.timeout_is_failure` is on by default and collection labels time-outs
in any case (aloe.rollout.record_episode). The policy's budget counts its own steps only
(aloe.rollout.correct), so a policy-state target depends on a counter the state does not
show; `critic.time_features` gives it to the critic (aloe.data.episode_clock).

Every chunk the update samples from π_θ (a' of Eq. 7, V^π's M chunks of Eq. 10) is π as it
acts, with its own Euler steps: fewer steps return nearly the mean chunk, not samples of π
(tests/policies/test_flow_sampler.py). With `update_sampler one-step` they come instead
from μ(s, ℓ, ε), one network call distilled to the flow's map from noise to chunk after
every actor update (aloe.policies.onestep, as in flow Q-learning); the actor still acts
with its own steps.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import Generator, Tensor

from aloe.algos.accept import AcceptanceGate
from aloe.algos.aloe_math import (
    BestOfNReduce,
    TargetReduce,
    advantage_weights,
    bootstrap_mask,
    clipped_weights,
    confidence_bound,
    critic_loss,
    estimate_value,
    hl_gauss_loss,
    member_values,
    polyak_update,
    q_pess,
    reduce_target,
    sample_best,
    td_target,
    weighted_flow_loss,
)
from aloe.algos.bc import bc_update
from aloe.algos.context import LearnerParts, UpdateContext, step_means
from aloe.algos.optimised import OptimConfig, OptimisedModule, to_device
from aloe.critics.chunked_q import QEnsemble
from aloe.critics.ensemble import build_critic, refit_normalizers
from aloe.critics.hl_gauss import support_bounds
from aloe.data import STATE, ChunkBatch, episode_seed
from aloe.errors import require
from aloe.nn import evaluating
from aloe.policies.base import Actor, ChunkSampling, as_module
from aloe.policies.flow import FlowPolicy
from aloe.policies.onestep import OneStepPolicy, distil

ValueSteps = Literal["full", "data"]
AdvantageKind = Literal["pess", "lcb"]
UpdateSampler = Literal["flow", "one-step"]


@dataclass
class AloeConfig:
    """ALOE's own hyper-parameters (`--aloe.*`); what every learner shares is `OptimConfig`
    (`--optim.*`). "Paper" gives Appendix C's value; "open" marks a choice the paper leaves
    to us."""

    beta: float = 5.0
    """β, advantage temperature of Eq. 11, in units of return (open; see module docstring)."""
    eps_clip: float = 3.0
    """ε_clip of Eq. 11: weights lie in [e^{−ε}, e^{ε}] ≈ [0.05, 20] (open; AWR's usual cap)."""
    num_value_samples: int = 4
    """M, chunks sampled from π_θ to estimate V^π in Eq. 10 (open; cost grows linearly)."""
    value_steps: ValueSteps = "full"
    """Which steps of V^π's M chunks the critic scores in Eq. 10 (open): full = all h (Eq. 10
    as written); data = the data chunk's executed steps, so that where a fragment's end cuts
    the data chunk to n < h steps, A compares n steps of the data with n steps of π's chunks
    rather than a short chunk with full ones (module docstring, "Truncated chunks")."""
    polyak: float = 0.005
    """ω of Alg. 1 line 8, φ⁻ ← ω φ + (1 − ω) φ⁻ (paper)."""
    critic_steps: int = 500
    """N_Q, critic updates per iteration (open; ~0.45 s each at h = 10 on 2 CPU cores)."""
    critic_updates_per_step: float = 0.0
    """N_Q as updates per environment step collected in the iteration (qc: 1.0), rounded,
    instead of the fixed `critic_steps`; 0 = the fixed count (open)."""
    actor_steps: int = 250
    """N_π, actor updates per iteration (open; fewer than N_Q since V and A rest on the
    critic; ~1.5 s each at h = 10, M = 4 on 2 CPU cores)."""
    target_reduce: TargetReduce = "min"
    """How Eq. 7 reads the target ensemble at (s_{t+n}, a'): "min" (pessimistic, as in
    clipped double-Q/REDQ; the paper trains all members on "the same target"), "mean", or
    "member" (each member bootstraps from its own target). Open."""
    normalize_advantage: bool = False
    """Divide A by its batch std before Eq. 11 (open; off keeps β in return units)."""
    advantage: AdvantageKind = "pess"
    """The advantage Eq. 11 weighs: pess = Q_pess − V^π (Eq. 10); lcb = the confidence-gated
    one: from each member's A_k = Q_k(s, a) − V_k^π(s), the end of mean_k A_k ± κ·std_k A_k
    nearest 0 (0 where the interval holds it), so a chunk the members disagree on gets
    w ≈ 1, plain BC (`aloe_math.confidence_bound`; beyond the paper)."""
    lcb_kappa: float = 1.0
    """κ of `advantage lcb`: the interval's half-width in member standard deviations."""
    best_of_n: int = 1
    """N: evaluation, collection and `aloe serve` sample N chunks of π in one batch and
    execute the one the critic ranks highest (`best_of_n_reduce`; Q-chunking's best-of-N,
    beyond the paper); 1 = plain sampling, one chunk of π."""
    best_of_n_reduce: BestOfNReduce = "min"
    """How best-of-N ranks a chunk: min = Q_pess (Eq. 9), mean = the members' mean."""
    best_of_n_target: bool = False
    """Eq. 7's a' too: the best of `best_of_n` chunks of π by the online critic (as
    Q-chunking backs up), valued by the target critic; off: one chunk of π (the paper)."""
    accept_margin: float | None = None
    """OPE-gated acceptance: after an iteration's actor steps, V^π of the new actor and of
    the previous one (mean Q_pess of their chunks at `accept_states` buffer states, the
    same states and noise) are compared, and the previous actor (with its optimiser) is
    kept when the new one's is lower by more than this margin, in units of return.
    None = every update is kept (the paper)."""
    accept_states: int = 256
    """Buffer states of the acceptance's estimates (one chunk batch of the iteration's
    sampler)."""
    update_sampler: UpdateSampler = "flow"
    """What draws the update's a' (Eq. 7) and V^π's M chunks (Eq. 10) (open): flow = π_θ
    with its own Euler steps; one-step = μ(s, ℓ, ε), an MLP distilled to the flow's chunk
    from the same noise ε after every actor step and BC step (aloe.policies.onestep, as in
    flow Q-learning; the compact flow actor only). The actor acts with its own steps either
    way; flow stays the default until a learning check says one-step matches it."""
    onestep_hidden_dim: int = 256
    """Width of μ's hidden layers (update_sampler one-step)."""
    onestep_layers: int = 3
    """Hidden layers of μ (update_sampler one-step)."""
    onestep_bc_every: int = 4
    """μ's distillation step follows every this many BC steps of the warm start (and every
    actor step), so that the first critic steps have a trained μ (open: a distillation step
    costs three BC steps at the default size, and μ learns little from the early, fast-moving
    flow; 4 keeps the warm start's time within 2× of flow's)."""
    onestep_lr: float = 1e-3
    """Peak learning rate of μ, on the shared schedule (open: μ must follow a moving flow in
    the few thousand steps of a run; on a fixed small actor its error reaches 0.1 of the
    flow's spread in ~120 steps at 1e-3, and is still 0.5 after 200 at 3e-4)."""

    def validate(self, prefix: str = "") -> None:
        """Raise UsageError naming the first field out of range, `aloe.beta (-5.0): must be
        > 0`; `prefix` leads the name ("config field " for a run's config)."""
        checks: list[tuple[str, bool, str]] = [
            ("beta", self.beta > 0, "must be > 0"),
            ("eps_clip", self.eps_clip > 0, "must be > 0"),
            ("num_value_samples", self.num_value_samples >= 1, "must be >= 1"),
            ("polyak", 0 < self.polyak <= 1, "must be in (0, 1]"),
            ("critic_steps", self.critic_steps >= 0, "must be >= 0"),
            (
                "critic_updates_per_step",
                0 <= self.critic_updates_per_step < math.inf,
                "must be finite and >= 0 (0: the fixed critic_steps)",
            ),
            ("actor_steps", self.actor_steps >= 0, "must be >= 0"),
            (
                "target_reduce",
                self.target_reduce in get_args(TargetReduce),
                "must be min, mean or member",
            ),
            ("value_steps", self.value_steps in get_args(ValueSteps), "must be full or data"),
            ("advantage", self.advantage in get_args(AdvantageKind), "must be pess or lcb"),
            (
                "lcb_kappa",
                math.isfinite(self.lcb_kappa) and self.lcb_kappa >= 0,
                "must be a finite number >= 0",
            ),
            ("best_of_n", self.best_of_n >= 1, "must be >= 1 (1 = plain sampling)"),
            (
                "best_of_n_reduce",
                self.best_of_n_reduce in get_args(BestOfNReduce),
                "must be min or mean",
            ),
            (
                "best_of_n_target",
                not self.best_of_n_target or self.best_of_n > 1,
                "needs best_of_n > 1 (the N it picks among)",
            ),
            (
                "accept_margin",
                self.accept_margin is None
                or (math.isfinite(self.accept_margin) and self.accept_margin >= 0),
                "must be a finite number >= 0, or None (off)",
            ),
            ("accept_states", self.accept_states >= 1, "must be >= 1"),
            (
                "update_sampler",
                self.update_sampler in get_args(UpdateSampler),
                "must be flow or one-step",
            ),
            ("onestep_hidden_dim", self.onestep_hidden_dim >= 1, "must be >= 1"),
            ("onestep_layers", self.onestep_layers >= 1, "must be >= 1"),
            ("onestep_bc_every", self.onestep_bc_every >= 1, "must be >= 1"),
            ("onestep_lr", self.onestep_lr > 0, "must be > 0"),
        ]
        for name, ok, allowed in checks:
            require(ok, f"{prefix}aloe.{name}", getattr(self, name), allowed)


def preset(name: str) -> AloeConfig:
    """ALOE's update budget in preset `name` (smoke | default | paper | mt10)."""
    if name == "smoke":  # seconds on 2 cores: for tests and CI, not for results
        return AloeConfig(critic_steps=20, actor_steps=10, num_value_samples=2)
    if name in ("default", "mt10"):  # default: ≤ 20 minutes on 2 CPU cores (README)
        return AloeConfig(critic_steps=400, actor_steps=200, num_value_samples=2)
    return AloeConfig()  # paper: Appendix C (polyak 0.005)


def check_sharding(config: AloeConfig) -> None:
    """What training on shards of the batch (several learner processes) needs of ALOE's
    settings: every loss term is a mean of per-row terms."""
    require(
        not config.normalize_advantage,
        "config field aloe.normalize_advantage",
        True,
        "divides by the whole batch's std, which a shard does not see; turn it off "
        "or train on one process",
    )


def check_lerobot(config: AloeConfig) -> None:
    """What an update of a LeRobot VLA (`actor_kind lerobot`) needs of ALOE's settings: the
    one-step sampler distils the compact flow actor's Euler steps from given noise."""
    require(
        config.update_sampler == "flow",
        "config field aloe.update_sampler",
        config.update_sampler,
        "must be flow with actor_kind lerobot (one-step distils the compact flow actor)",
    )


# The learner: the models, one optimised module per trained network, one update of each kind.


class AloeLearner:
    """Actor π_θ, critic ensemble Q_φ and its target Q_φ⁻, and with `update_sampler
    one-step` the sampler μ distilled from π_θ; each trained network is an
    `OptimisedModule` (AdamW, schedule, clip, guard).

    All randomness of an update (a' and V samples, flow noise ε and time η) comes from one
    generator whose state is part of `state_dict`, so a resumed run continues bit-identically
    on CPU (with dropout 0: dropout draws from torch's global generator).
    """

    def __init__(
        self,
        actor: Actor,
        critic: QEnsemble,
        config: AloeConfig,
        optim: OptimConfig | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        optim = optim or OptimConfig()
        self.config = config
        self.device = torch.device(device)
        self.actor = actor
        self.actor_module = as_module(actor).to(self.device)
        self.critic = critic.to(self.device)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False).eval()
        self.actor_opt = OptimisedModule(self.actor_module, optim.actor_lr, optim)
        self.critic_opt = OptimisedModule(self.critic, optim.critic_lr, optim)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(optim.seed)
        self.onestep: OneStepPolicy | None = None
        if config.update_sampler == "one-step":
            if not isinstance(actor, FlowPolicy):
                kind = type(actor).__name__
                raise TypeError(f"update_sampler one-step distils a FlowPolicy, not a {kind}")
            self.flow = actor
            self.onestep = OneStepPolicy.distilling(
                actor, config.onestep_hidden_dim, config.onestep_layers
            ).to(self.device)
            self.onestep_opt = OptimisedModule(self.onestep, config.onestep_lr, optim)

    @property
    def update_policy(self) -> ChunkSampling:
        """What draws a' (Eq. 7) and V^π's chunks (Eq. 10): μ with `update_sampler
        one-step`, else π_θ as it acts."""
        return self.actor if self.onestep is None else self.onestep

    @property
    def beta(self) -> float:
        """β of Eq. 11, the temperature of `actor_weights` (aloe.evaluation.weights)."""
        return self.config.beta

    def critic_step(self, batch: ChunkBatch) -> dict[str, float]:
        """One critic update, Alg. 1 lines 5–8."""
        cfg = self.config
        b = to_device(batch, self.device)
        self.critic.train()
        with torch.no_grad():
            a_next = self.next_chunk(b)  # Alg. 1 line 5
            next_q = self.target_critic(b.next_state, b.task_index, a_next, None, b.next_time)
            y = td_target(b, reduce_target(next_q, cfg.target_reduce))  # Eq. 7
        p = self.critic.config.bootstrap
        mask = bootstrap_mask(self.critic.num_q, len(y), p, self.generator)
        raw = self.critic.raw(b.state, b.task_index, b.actions, b.valid, b.time)
        if self.critic.value_head is None:
            loss, metrics = critic_loss(raw, y, mask)  # Eq. 8
        else:
            loss, metrics = hl_gauss_loss(raw, y, self.critic.value_head, mask)  # Eq. 8
        self.critic_opt.step(loss, metrics, "critic")
        polyak_update(self.target_critic, self.critic, cfg.polyak)  # Alg. 1 line 8
        return metrics

    def next_chunk(self, b: ChunkBatch) -> Tensor:
        """a' ~ π_θ(·|s_{t+n}, ℓ) (B, h, A), the current policy's next chunk; with
        `best_of_n_target` the best of N by the online critic (`sample_best`)."""
        cfg = self.config
        n = cfg.best_of_n if cfg.best_of_n_target else 1
        with evaluating(self.critic):
            return sample_best(
                self.critic,
                self.update_policy,
                b.next_state,
                b.task_index,
                n,
                cfg.best_of_n_reduce,
                self.generator,
                images=b.next_images,
                time=b.next_time,
            )

    def actor_step(self, batch: ChunkBatch) -> dict[str, float]:
        """One actor update, Alg. 1 lines 11–14."""
        b = to_device(batch, self.device)
        w, metrics = self.actor_weights(b)
        metrics = weighted_actor_update(self.actor, self.actor_opt, b, w, metrics, self.generator)
        return metrics | self.distil_step(b)

    def distil_step(self, b: ChunkBatch) -> dict[str, float]:
        """With `update_sampler one-step`, one update of μ towards the current flow's chunks
        from the same noise on the batch's states (after the actor's update, so μ follows
        the actor it stands in for); no-op otherwise."""
        if self.onestep is None:
            return {}
        loss, metrics = distil(self.onestep, self.flow, b.state, b.task_index, self.generator)
        return self.onestep_opt.step(loss, metrics, "onestep")

    def value(self, b: ChunkBatch) -> Tensor:
        """Eq. 10: V^π(s, ℓ) (B,) of the batch's states from M chunks sampled from π_θ (or μ,
        `update_policy`), scored over `config.value_steps`; call it under
        `evaluating(self.critic)`."""
        cfg = self.config
        return estimate_value(
            self.critic,
            self.update_policy,
            b.state,
            b.task_index,
            cfg.num_value_samples,
            self.generator,
            images=b.images,
            valid=b.valid if cfg.value_steps == "data" else None,
            time=b.time,
        )

    def q_data(self, b: ChunkBatch) -> Tensor:
        """Eq. 9: Q_pess (B,) of the batch's data chunks, over their executed steps."""
        with torch.no_grad(), evaluating(self.critic):
            return q_pess(self.critic(b.state, b.task_index, b.actions, b.valid, b.time))  # Eq. 9

    def actor_weights(self, b: ChunkBatch) -> tuple[Tensor, dict[str, float]]:
        """Alg. 1 lines 11–13: the weight w (B,) of each data chunk, and its metrics."""
        cfg = self.config
        if cfg.advantage == "lcb":
            return self.gated_weights(b)
        q_data = self.q_data(b)  # Eq. 9
        with torch.no_grad(), evaluating(self.critic):
            v = self.value(b)
        w, metrics = advantage_weights(  # Eq. 10–11
            q_data, v, cfg.beta, cfg.eps_clip, cfg.normalize_advantage
        )
        metrics["actor/q_data_mean"] = float(q_data.mean())
        metrics["actor/v_mean"] = float(v.mean())
        return w, metrics

    def gated_weights(self, b: ChunkBatch) -> tuple[Tensor, dict[str, float]]:
        """`advantage lcb`: w (B,) from the confidence-gated advantage (`confidence_bound`)
        of the members' A_k = Q_k(s, a) − V_k^π(s), V_k^π over the M chunks V^π samples."""
        cfg = self.config
        steps = b.valid if cfg.value_steps == "data" else None
        with torch.no_grad(), evaluating(self.critic):
            q = self.critic(b.state, b.task_index, b.actions, b.valid, b.time)
            v = member_values(
                self.critic,
                self.update_policy,
                b.state,
                b.task_index,
                cfg.num_value_samples,
                self.generator,
                images=b.images,
                valid=steps,
                time=b.time,
            )
        adv = confidence_bound(q - v, cfg.lcb_kappa)
        w, metrics = clipped_weights(adv, cfg.beta, cfg.eps_clip, cfg.normalize_advantage)
        metrics["actor/q_data_mean"] = float(q_pess(q).mean())  # Eq. 9
        metrics["actor/v_mean"] = float(q_pess(v).mean())  # the most pessimistic member's V
        metrics["actor/advantage_member_std"] = float((q - v).std(dim=0, correction=0).mean())
        metrics["actor/gated_frac"] = float((adv == 0).float().mean())
        return w, metrics

    def bc_step(self, batch: ChunkBatch, valid_rows_mask: Tensor | None = None) -> dict[str, float]:
        """One behaviour-cloning update (Alg. 1 line 1, Eq. 16) on the actor's optimiser, and
        at every `onestep_bc_every`-th update of it μ's distillation step on the batch."""
        mask = None if valid_rows_mask is None else valid_rows_mask.to(self.device)
        b = to_device(batch, self.device)
        metrics = bc_update(self.actor, self.actor_opt, b, self.generator, mask)
        if self.actor_opt.updates % self.config.onestep_bc_every:
            return metrics
        return metrics | self.distil_step(b)

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs: modules, optimisers, schedules, the generator."""
        onestep = {} if self.onestep is None else self.onestep_opt.state_dict("onestep")
        return {
            **self.actor_opt.state_dict("actor"),
            **self.critic_opt.state_dict("critic"),
            "target_critic": self.target_critic.state_dict(),
            "generator": self.generator.get_state(),
            **onestep,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.actor_opt.load_state_dict(state, "actor")
        self.critic_opt.load_state_dict(state, "critic")
        self.target_critic.load_state_dict(state["target_critic"])
        self.generator.set_state(state["generator"].cpu())
        if self.onestep is not None:
            self.onestep_opt.load_state_dict(state, "onestep")


def weighted_actor_update(
    actor: Actor,
    opt: OptimisedModule,
    b: ChunkBatch,
    w: Tensor,
    metrics: dict[str, float],
    generator: Generator | None,
) -> dict[str, float]:
    """Alg. 1 line 14: minimise the w-weighted flow-matching loss (Eq. 15) on the batch."""
    loss, loss_metrics = weighted_actor_loss(actor, b, w, generator)  # Eq. 15
    metrics |= loss_metrics
    return opt.step(loss, metrics, "actor")


def weighted_actor_loss(
    actor: Actor, b: ChunkBatch, w: Tensor, generator: Generator | None
) -> tuple[Tensor, dict[str, float]]:
    """Eq. 15 on the batch, with the actor in training mode: the forward half of line 14."""
    as_module(actor).train()
    per_sample = actor.flow_loss_per_sample(
        b.state, b.task_index, b.actions, b.valid, generator, images=b.images
    )
    return weighted_flow_loss(per_sample, w)  # Eq. 15


def build_learner(parts: LearnerParts[AloeConfig]) -> AloeLearner:
    """The actor and a chunked Q ensemble over (s, a_{t:t+h}, ℓ)."""
    return _learner(parts, parts.settings)


def build_actor_learner(parts: LearnerParts[object]) -> AloeLearner:
    """BC's and HG-DAgger's learner: ALOE's, of which only the actor trains (`bc_step`); its
    critic stays idle, and ALOE's own settings (`aloe.*`) are the defaults, never read."""
    return _learner(parts, AloeConfig())


def _learner(parts: LearnerParts[Any], config: AloeConfig) -> AloeLearner:
    """The HL-Gauss bins span every return of Eq. 14 (`hl_gauss.support_bounds`); without
    C_fail (a learner a checkpoint is loaded into) a placeholder, which the checkpoint's
    bins replace."""
    cfg = parts.cfg
    dims = (parts.state_dim, parts.action_dim, parts.num_tasks)
    support = (-1.0, 0.0)
    if parts.c_fail is not None:
        support = support_bounds(parts.c_fail, cfg.optim.gamma)
    critic = build_critic(
        cfg.critic, *dims, parts.normalizer, horizon=cfg.horizon, support=support, **parts.tokens
    )
    return AloeLearner(parts.actor, critic, config, cfg.optim, device=parts.device)


# Algorithm 1, lines 4–15: one iteration's update.

ACCEPT_STREAM = 0x61636370  # the acceptance's noise, apart from the update's generator

# metrics.jsonl column -> the learner metric it averages over the iteration's steps
CRITIC_METRICS = {
    "critic_loss": "critic/loss",
    "q_mean": "critic/q_mean",
    "q_member_std": "critic/q_member_std",  # the ensemble's spread, mean over rows
    "critic_grad_norm": "critic/grad_norm",  # before clipping to optim.grad_clip
}
ACTOR_METRICS = {
    "q_pess_mean": "actor/q_data_mean",
    "v_mean": "actor/v_mean",
    "advantage_mean": "actor/advantage_mean",
    "advantage_std": "actor/advantage_std",
    "weight_mean": "actor/weight_mean",
    "weight_max": "actor/weight_max",
    "weight_clipped_frac": "actor/clip_frac",
    "actor_flow_loss": "actor/flow_loss",
}
# the columns of a value-weighted update: null in a row without one (warm start, HG-DAgger)
UPDATE_COLUMNS = (*CRITIC_METRICS, *ACTOR_METRICS)
# with `update_sampler one-step` only: μ's distillation error at the iteration's actor steps
ONESTEP_METRICS = {"onestep_mse": "onestep/mse", "onestep_rel_err": "onestep/rel_err"}


def update(ctx: UpdateContext[AloeConfig]) -> dict[str, float]:
    """Iteration k's update on the whole buffer D_k: N_Q critic steps (lines 4–9), then
    N_π actor steps (lines 10–15), each on a fresh minibatch."""
    learner = ctx.learner_as(AloeLearner)
    own = ctx.settings
    k = ctx.iteration
    fit_buffer_normalizer(learner, ctx.frames)
    sampler = ctx.sampler(ctx.frames)
    n_q = critic_updates(own, ctx.env_steps)
    critic = ctx.steps(n_q, learner.critic_step, sampler, f"critic[{k}]")
    gate = acceptance_gate(ctx, learner)
    actor = ctx.steps(own.actor_steps, learner.actor_step, sampler, f"actor[{k}]")
    row = {**step_means(critic, CRITIC_METRICS), **step_means(actor, ACTOR_METRICS)}
    if learner.onestep is not None:
        row |= step_means(actor, ONESTEP_METRICS)
    return row if gate is None else row | gate.decide(own.accept_margin or 0.0)


def acceptance_gate(ctx: UpdateContext[AloeConfig], learner: AloeLearner) -> AcceptanceGate | None:
    """With `accept_margin`, the previous actor kept aside and valued on `accept_states`
    states (a sampler of their own, seeded as the iteration's) before the actor steps."""
    own = ctx.settings
    if own.accept_margin is None:
        return None
    states = to_device(ctx.sampler(ctx.frames).sample(own.accept_states), learner.device)
    seed = episode_seed(ctx.cfg.seed, ctx.iteration, 0) ^ ACCEPT_STREAM
    return AcceptanceGate(
        learner.critic, learner.actor, learner.actor_opt, states, own.num_value_samples, seed
    )


def fit_buffer_normalizer(learner: AloeLearner, frames: Mapping[str, np.ndarray]) -> None:
    """With `critic.normalizer buffer`, fit the critics' state normaliser on every state of
    the buffer D_k (policy and human rows included), before the iteration's critic steps."""
    if learner.critic.config.normalizer == "buffer":
        states = torch.as_tensor(np.array(frames[STATE], dtype=np.float32))
        for net in (learner.critic, learner.target_critic):
            refit_normalizers(net, states.mean(0), states.std(0, correction=0))


def critic_updates(config: AloeConfig, env_steps: int) -> int:
    """N_Q of an iteration that collected `env_steps` environment steps."""
    if config.critic_updates_per_step == 0:
        return config.critic_steps
    return round(config.critic_updates_per_step * env_steps)

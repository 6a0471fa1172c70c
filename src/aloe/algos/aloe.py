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
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Generator, Tensor

from aloe.algos.accept import AcceptanceGate
from aloe.algos.aloe_config import AloeConfig
from aloe.algos.aloe_math import (
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
from aloe.nn import evaluating
from aloe.policies.base import Actor, ChunkSampling, as_module
from aloe.policies.flow import FlowPolicy
from aloe.policies.onestep import OneStepPolicy, distil

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
        sampler = config.update_sampler
        if sampler == "one-step" or (sampler == "auto" and isinstance(actor, FlowPolicy)):
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
        return self._sampled_values(estimate_value, b)

    def _sampled_values(self, values: Callable[..., Tensor], b: ChunkBatch) -> Tensor:
        """`values` (`estimate_value`, or `member_values` for each member's) over the M
        chunks V^π samples for the batch's states, scored over `config.value_steps`."""
        cfg = self.config
        return values(
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

    def q_members(self, b: ChunkBatch) -> Tensor:
        """Every member's Q (K, B) of the batch's data chunks, over their executed steps."""
        with torch.no_grad(), evaluating(self.critic):
            return self.critic(b.state, b.task_index, b.actions, b.valid, b.time)

    def q_data(self, b: ChunkBatch) -> Tensor:
        """Eq. 9: Q_pess (B,) of the batch's data chunks, over their executed steps."""
        return q_pess(self.q_members(b))  # Eq. 9

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
        q = self.q_members(b)
        with torch.no_grad(), evaluating(self.critic):
            v = self._sampled_values(member_values, b)
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

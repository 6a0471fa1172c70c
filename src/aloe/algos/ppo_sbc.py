"""Action-chunked PPO with self behaviour cloning (papers/chunked-ppo-sbc-summary.txt).

On-policy, without the operator: after the shared BC warm start, each iteration rolls the
policy out alone for an environment-step budget, runs PPO over action chunks (one
decision per executed chunk) with chunk-level GAE, and adds a BC loss on a buffer of
successful episodes whose weight adapts online. Those pure functions (the likelihood, the
clipped surrogate, GAE, the weight, the buffer's rows) are `aloe.algos.ppo_math`'s; here
are the settings, the learner, the collection and one iteration's update.

Likelihood surrogate. A flow policy has no tractable chunk likelihood, so the policy PPO
optimises is a Gaussian around a deterministic flow sample (`aloe.algos.ppo_policy`):
    μ_θ(s) = Euler-integrate the flow from the fixed noise ε = 0 (the prior's mean),
    a ~ N(μ_θ(s), diag σ²),  σ = exp(log σ) learnable per action dimension,
    log π(a|s) = Σ_{k<e, valid} Σ_d log N(a_{k,d}; μ_θ(s)_{k,d}, σ_d²)       (`gaussian_log_prob`)
over the e = exec_horizon executed actions of the chunk (the rest never reach the
environment). The gradient flows through all Euler steps into θ. Rollouts store the
sampled (unclipped) a; the environment clips it. Evaluation, like PPO's usual
deterministic test, runs μ_θ(s) without noise. π_old is the checkpointed policy the
rollouts came from, so log π_old is recomputed before the first update step.

Value warm-up (`value_warmup_iterations`): in the first PPO iterations only V(s) trains (the
same epochs and minibatches, the policy's step skipped), so that the first policy updates
read advantages of a fitted value rather than of the BC warm start's untrained one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from aloe import data as D
from aloe.algos.bc import bc_update
from aloe.algos.context import (
    CollectContext,
    LearnerParts,
    RunConfig,
    UpdateContext,
    mean_metric,
    step_means,
)
from aloe.algos.optimised import OptimConfig, OptimisedModule, to_device
from aloe.algos.ppo_math import (
    BUFFER_RULES,
    chunk_gae,
    gaussian_log_prob,
    ppo_clip_loss,
    sbc_weight,
    self_demo_rows,
    update_success_average,
)
from aloe.algos.ppo_policy import ExploringChunkPolicy, GaussianFlowActor
from aloe.collect import CollectStats
from aloe.critics.chunked_q import ChunkedQCritic, CriticConfig
from aloe.data import ChunkBatch, episode_seed
from aloe.datasets.sampler import ChunkSampler
from aloe.errors import require
from aloe.nn import Normalizer, evaluating
from aloe.policies.flow import FlowPolicy
from aloe.progress import Phase
from aloe.rollout import record_episode


@dataclass
class PpoConfig:
    """Action-chunked PPO + self behaviour cloning (`--ppo.*`); the optimisers' settings
    are every learner's (`optim.*`), but for the PPO iterations' actor_lr."""

    rollout_steps: int | None = None
    """Environment steps of rollouts per iteration (whole episodes, stopping once reached);
    None = collect.max_episodes × env.max_steps, the most the operator-in-the-loop
    collection lets the policy act per iteration."""
    init_std: float = 0.1
    """Initial σ of the Gaussian around μ_θ(s), in action units (actions lie in [−1, 1])."""
    min_std: float = 0.02
    """Lower clamp of σ."""
    max_std: float = 0.5
    """Upper clamp of σ."""
    learn_std: bool = True
    """Learn log σ by PPO (False keeps σ = init_std)."""
    actor_lr: float = 1e-5
    """Peak actor learning rate of the PPO iterations (the BC warm start keeps
    optim.actor_lr, the same for every algorithm). Measured on the default preset: one
    Adam step at 3e-4 moves π by a KL of ~2 nats per decision, at 3e-5 by ~0.3; at 1e-5
    ~100 steps fit under target_kl = 1. At this rate log σ barely moves (~1e-3 per
    iteration): σ is in effect fixed at init_std."""
    clip: float = 0.2
    """ε of PPO's clipped ratio, clip(ρ, 1 − ε, 1 + ε)."""
    gae_lambda: float = 0.95
    """λ of GAE, applied per decision (per executed chunk)."""
    reward_scale: float = 0.01
    """Rewards are multiplied by this before GAE and the value fit (Eq. 14 returns reach
    −(C_fail + 1/(1 − γ)) ≈ −200; scaled, they are of order 1)."""
    epochs: int = 4
    """Passes over the iteration's decisions."""
    minibatch_size: int = 64
    """Decisions per PPO update."""
    target_kl: float | None = 1.0
    """Stop the iteration's updates once a step's approximate KL(π_old‖π) exceeds 1.5 ×
    this (SB3's rule). A chunk's log π sums e × A Gaussian terms, so a mean shift of δ
    per action costs e·A·δ²/(2σ²): 1.0 allows δ ≈ 0.03 at σ = 0.1, e = 5, A = 4.
    None = never stop early."""
    normalize_advantage: bool = True
    """Standardise the iteration's advantages (zero mean, unit std) before the updates."""
    entropy_coef: float = 0.0
    """Weight of the Gaussian's entropy bonus (Σ_d log σ_d + const)."""
    bc_batch_size: int = 64
    """Chunks from the self-demonstration buffer per update (the BC term)."""
    sbc_buffer_episodes: int = 50
    """Capacity of the self-demonstration buffer, in successful episodes per task (a
    multi-task run keeps this many of each task's)."""
    sbc_weight_min: float = 0.1
    """w_min: the BC weight when every recent rollout succeeds."""
    sbc_weight_max: float = 1.0
    """w_max: the BC weight when every recent rollout fails."""
    sbc_success_rate: float = 0.5
    """ρ, the rate of the success-rate moving average s̄ that sets the BC weight."""
    sbc_buffer_rule: str = "recent"
    """Which successes the self-demonstration buffer keeps: recent (FIFO, the latest) |
    shortest (the fewest steps to success; ties: the latest)."""
    value_warmup_iterations: int = 1
    """PPO iterations, from the first, in which only the value network trains (rollouts are
    still collected; the policy does not move). 1, standard practice: otherwise the first
    policy step reads advantages of the BC start's untrained V(s). Not resolved by
    measurement: on MT10 neither the curves nor benchmarks/ppo_gradient_probe.py separate it
    from 0 (README, "Results")."""

    def validate(self, prefix: str = "") -> None:
        """Raise UsageError naming the first field out of range, `ppo.clip (1.5): must be in
        (0, 1)`; `prefix` leads the name ("config field " for a run's config)."""
        checks: list[tuple[str, bool, str]] = [
            (
                "rollout_steps",
                self.rollout_steps is None or self.rollout_steps >= 1,
                "must be None or >= 1",
            ),
            ("min_std", self.min_std > 0, "must be > 0"),
            ("max_std", self.max_std >= self.min_std, f"must be >= min_std ({self.min_std})"),
            (
                "init_std",
                self.min_std <= self.init_std <= self.max_std,
                f"must be in [min_std, max_std] ([{self.min_std}, {self.max_std}])",
            ),
            ("actor_lr", self.actor_lr > 0, "must be > 0"),
            ("clip", 0 < self.clip < 1, "must be in (0, 1)"),
            ("gae_lambda", 0 <= self.gae_lambda <= 1, "must be in [0, 1]"),
            ("reward_scale", self.reward_scale > 0, "must be > 0"),
            ("epochs", self.epochs >= 0, "must be >= 0"),
            ("target_kl", self.target_kl is None or self.target_kl > 0, "must be None or > 0"),
            ("minibatch_size", self.minibatch_size >= 1, "must be >= 1"),
            ("entropy_coef", self.entropy_coef >= 0, "must be >= 0"),
            ("bc_batch_size", self.bc_batch_size >= 1, "must be >= 1"),
            ("sbc_buffer_episodes", self.sbc_buffer_episodes >= 1, "must be >= 1"),
            ("sbc_weight_min", self.sbc_weight_min >= 0, "must be >= 0"),
            (
                "sbc_weight_max",
                self.sbc_weight_max >= self.sbc_weight_min,
                f"must be >= sbc_weight_min ({self.sbc_weight_min})",
            ),
            ("sbc_success_rate", 0 < self.sbc_success_rate <= 1, "must be in (0, 1]"),
            (
                "sbc_buffer_rule",
                self.sbc_buffer_rule in BUFFER_RULES,
                f"must be one of {', '.join(BUFFER_RULES)}",
            ),
            ("value_warmup_iterations", self.value_warmup_iterations >= 0, "must be >= 0"),
        ]
        for name, ok, allowed in checks:
            require(ok, f"{prefix}ppo.{name}", getattr(self, name), allowed)


def preset(name: str) -> PpoConfig:
    """PPO+SBC's settings in preset `name` (smoke | default | paper | mt10): the defaults,
    measured on MT10, but for the smoke preset's seconds-long iterations."""
    if name == "smoke":
        return PpoConfig(epochs=2, minibatch_size=32, bc_batch_size=16, sbc_buffer_episodes=10)
    return PpoConfig()


# The learner.


class Decisions(NamedTuple):
    """One iteration's decisions (D = decisions, e = exec_horizon), in time order."""

    state: Tensor  # (D, S)
    task_index: Tensor  # (D,)
    actions: Tensor  # (D, e, A) the executed actions
    valid: Tensor  # (D, e)
    logp_old: Tensor  # (D,) log π_old(a|s)
    advantage: Tensor  # (D,)
    returns: Tensor  # (D,) value targets, scaled rewards


class PpoSbcLearner:
    """The Gaussian flow actor and a state value V(s) (`critic`: ALOE's transformer with
    K = 1, no action tokens, a scalar head), each an `OptimisedModule` with the shared
    settings (`optim`).
    """

    def __init__(
        self,
        actor: GaussianFlowActor,
        critic: ChunkedQCritic,
        ppo: PpoConfig,
        optim: OptimConfig | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        optim = optim or OptimConfig()
        self.ppo = ppo
        self.device = torch.device(device)
        self.actor = actor.to(self.device)
        self.critic = critic.to(self.device)
        self.actor_opt = OptimisedModule(self.actor, optim.actor_lr, optim)
        self.value_opt = OptimisedModule(self.critic, optim.critic_lr, optim)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(optim.seed)
        self.success_average: float | None = None

    @torch.no_grad()
    def value(self, state: Tensor, task_index: Tensor) -> Tensor:
        with evaluating(self.critic):
            return self.critic(state.to(self.device), task_index.to(self.device))[0]

    def log_prob(self, state: Tensor, task_index: Tensor, actions: Tensor, valid: Tensor) -> Tensor:
        mean = self.actor.mean_chunk(state, task_index)[:, : actions.shape[1]]
        return gaussian_log_prob(actions, mean, self.actor.clamped_log_std(), valid)

    def decisions(self, batch: ChunkBatch, last: Tensor, reward_scale: float) -> Decisions:
        """log π_old, GAE advantages and value targets of a time-ordered decision batch."""
        b = to_device(batch, self.device)
        # train mode, as in `ppo_step`: eval mode takes torch's fused transformer path, whose
        # rounding differs, and the first step's ratio must be exactly 1
        self.actor.train()
        with torch.no_grad():
            logp_old = self.log_prob(b.state, b.task_index, b.actions, b.valid)
        v = self.value(b.state, b.task_index)
        v_next = self.value(b.next_state, b.task_index)
        adv, ret = chunk_gae(
            b.reward * reward_scale,
            b.discount,
            b.bootstrap,
            v,
            v_next,
            last.to(self.device),
            self.ppo.gae_lambda,
        )
        if self.ppo.normalize_advantage and adv.numel() > 1:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        return Decisions(b.state, b.task_index, b.actions, b.valid, logp_old, adv, ret)

    def ppo_step(
        self, d: Decisions, demos: ChunkBatch, bc_weight: float, policy: bool = True
    ) -> dict[str, float]:
        """One actor update: L = L_PPO − c_H H + w L_BC; then one value update (the value's
        alone without `policy`, in the warm-up)."""
        if not policy:
            return self.value_step(d, {})
        cfg = self.ppo
        b = to_device(demos, self.device)
        self.actor.train()
        logp = self.log_prob(d.state, d.task_index, d.actions, d.valid)
        loss, metrics = ppo_clip_loss(logp, d.logp_old, d.advantage, cfg.clip)
        entropy = self.actor.clamped_log_std().sum()  # Gaussian entropy up to a constant
        per_sample = self.actor.flow_loss_per_sample(
            b.state, b.task_index, b.actions, b.valid, self.generator
        )
        bc = per_sample.mean()  # Eq. 16 on the self-demonstration buffer
        total = loss - cfg.entropy_coef * entropy + bc_weight * bc
        metrics |= {
            "sbc/bc_loss": float(bc.detach()),
            "sbc/weight": bc_weight,
            "ppo/std": float(self.actor.clamped_log_std().detach().exp().mean()),
        }
        self.actor_opt.step(total, metrics, "actor")
        return self.value_step(d, metrics)

    def value_step(self, d: Decisions, metrics: dict[str, float]) -> dict[str, float]:
        """One value update towards the decisions' GAE targets."""
        self.critic.train()
        value = self.critic(d.state, d.task_index)[0]
        value_loss = (value - d.returns).square().mean()
        metrics["ppo/value_loss"] = float(value_loss.detach())
        return self.value_opt.step(value_loss, metrics, "value")

    def bc_step(self, batch: ChunkBatch, valid_rows_mask: Tensor | None = None) -> dict[str, float]:
        """One behaviour-cloning update (the warm start, Eq. 16) on the actor's optimiser."""
        mask = None if valid_rows_mask is None else valid_rows_mask.to(self.device)
        b = to_device(batch, self.device)
        return bc_update(self.actor, self.actor_opt, b, self.generator, mask)

    def state_dict(self) -> dict[str, Any]:
        """Modules, optimisers, schedules, the generator and s̄. The value network keeps the
        key `critic` of the runs written before it left ALOE's learner."""
        return {
            **self.actor_opt.state_dict("actor"),
            **self.value_opt.state_dict("critic"),
            "generator": self.generator.get_state(),
            "success_average": self.success_average,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Also reads older runs' checkpoints; their unused `target_critic` is ignored."""
        self.actor_opt.load_state_dict(state, "actor")
        self.value_opt.load_state_dict(state, "critic")
        self.generator.set_state(state["generator"].cpu())
        self.success_average = state["success_average"]


def build_ppo_learner(
    actor: FlowPolicy,
    critic_cfg: CriticConfig,
    state_dim: int,
    state_norm: Normalizer,
    ppo: PpoConfig,
    optim: OptimConfig,
    device: torch.device,
    tokens: dict[str, Any] | None = None,
) -> PpoSbcLearner:
    """The Gaussian flow actor and V(s): ALOE's critic transformer, K = 1, no actions."""
    gauss = GaussianFlowActor(actor, ppo.init_std, ppo.min_std, ppo.max_std, ppo.learn_std)
    cfg = CriticConfig(**{**vars(critic_cfg), "num_q": 1})
    n = actor.instruction.num_tasks
    critic = ChunkedQCritic(cfg, state_dim, 0, n, state_norm, **(tokens or {}))
    return PpoSbcLearner(gauss, critic, ppo, optim, device)


def build_learner(parts: LearnerParts[PpoConfig]) -> PpoSbcLearner:
    cfg = parts.cfg
    assert isinstance(parts.actor, FlowPolicy)  # PPO reads its internals; config refuses others
    return build_ppo_learner(
        parts.actor,
        cfg.critic,
        parts.state_dim,
        parts.normalizer(),
        parts.settings,
        cfg.optim,
        parts.device,
        parts.tokens,
    )


def update_batch(optim: OptimConfig, ppo: PpoConfig) -> tuple[int, str]:
    """The largest batch of an update and its field: a decision minibatch and a BC batch
    at once, or the warm start's optim.batch_size."""
    both = ppo.minibatch_size + ppo.bc_batch_size
    if both > optim.batch_size:
        return both, "ppo.minibatch_size"
    return optim.batch_size, "optim.batch_size"


# One iteration: collection without the operator, then the update.


def rollout_budget(cfg: RunConfig, ppo: PpoConfig) -> int:
    """Environment steps of an iteration's rollouts (`PpoConfig.rollout_steps`)."""
    return ppo.rollout_steps or cfg.collect.max_episodes * cfg.env.max_steps


def collect_rollouts(ctx: CollectContext[PpoConfig]) -> CollectStats:
    """Iteration k's operator-free rollouts of π_{k−1}, until the env-step budget is used;
    each episode is recorded like any other (one `policy` fragment)."""
    cfg = ctx.cfg
    learner = ctx.learner_as(PpoSbcLearner)
    k = ctx.iteration
    stats = CollectStats.from_store(ctx.store, iteration=k)  # resumes a partial round
    policy = ExploringChunkPolicy(
        learner.actor,
        version=k - 1,
        exec_horizon=cfg.exec_horizon,
        seed=cfg.seed,
        device=learner.device,
        obs=ctx.obs,
    )
    budget = rollout_budget(cfg, ctx.settings)
    bar = Phase(
        f"rollouts[{k}]", budget, cfg.progress, unit="step", initial=min(budget, stats.env_steps)
    )
    while stats.env_steps < budget:
        seed = episode_seed(cfg.seed, k, stats.episodes)
        ep = record_episode(
            ctx.env, seed, policy=policy, iteration=k, record_sim_state=cfg.collect.record_sim_state
        ).episode
        ctx.store.append(ep)
        stats.add(ep)
        bar.update(len(ep))
    bar.close()
    return stats


PPO_METRICS = {  # metrics.jsonl column -> the policy-step metric it averages
    "ppo_loss": "ppo/loss",
    "ppo_clip_frac": "ppo/clip_frac",
    "ppo_approx_kl": "ppo/approx_kl",
    "ppo_std": "ppo/std",
}


def rollout_decisions(
    cfg: RunConfig, learner: PpoSbcLearner, frames: D.Frames, k: int
) -> tuple[Decisions, D.Frames]:
    """Iteration k's decisions as its update reads them (π_{k−1}'s rollouts, one per executed
    chunk, with log π_old and GAE advantages from the learner as it is), and those rollouts."""
    mine = (frames[D.SOURCE] == "policy") & (frames[D.POLICY_VERSION] == k - 1)
    rollouts = frames.select(mine)
    rows = np.flatnonzero(rollouts[D.FRAME] % cfg.exec_horizon == 0)
    last = torch.as_tensor(D.run_ends(rollouts[D.EPISODE][rows]), dtype=torch.float32)
    chunks = ChunkSampler(
        rollouts, horizon=cfg.exec_horizon, gamma=cfg.optim.gamma, device=learner.device
    ).chunks_at(rows)
    return learner.decisions(chunks, last, learner.ppo.reward_scale), rollouts


def update(ctx: UpdateContext[PpoConfig]) -> dict[str, float]:
    """PPO epochs over iteration k's decisions, each step with a BC batch from the buffer."""
    ppo = ctx.settings
    learner = ctx.learner_as(PpoSbcLearner)
    frames = ctx.frames
    k = ctx.iteration
    learner.actor_opt.set_peak_lr(ppo.actor_lr)
    decisions, rollouts = rollout_decisions(ctx.cfg, learner, frames, k)

    ends = rollouts.episode_ends()
    won = rollouts[D.SUCCESS][ends].astype(bool)
    learner.success_average = update_success_average(
        learner.success_average, float(won.mean()), ppo.sbc_success_rate
    )
    weight = sbc_weight(learner.success_average, ppo.sbc_weight_min, ppo.sbc_weight_max)
    buffer = self_demo_rows(frames, ppo.sbc_buffer_episodes, ppo.sbc_buffer_rule)
    demos = ctx.sampler(frames.select(buffer))

    warmup = k <= ppo.value_warmup_iterations  # iteration 0 is the BC warm start
    steps = _ppo_epochs(learner, decisions, demos, weight, policy=not warmup)
    lengths = np.diff(np.r_[0, np.flatnonzero(ends) + 1])
    moved = [] if warmup else steps  # a warm-up's steps report the value's loss alone
    return {
        **step_means(moved, PPO_METRICS),
        "ppo_value_loss": mean_metric(steps, "ppo/value_loss"),
        "ppo_decisions": decisions.state.shape[0],
        "ppo_updates": len(steps),
        "rollout_success_rate": float(won.mean()),
        "rollout_steps_to_success": float(lengths[won].mean()) if won.any() else math.nan,
        "sbc_bc_loss": mean_metric(moved, "sbc/bc_loss"),
        "sbc_weight": weight,
        "sbc_buffer_episodes": len(np.unique(frames[D.EPISODE][buffer])),
        "ppo_value_warmup": float(warmup),
    }


def _ppo_epochs(
    learner: PpoSbcLearner,
    decisions: Decisions,
    demos: ChunkSampler,
    weight: float,
    policy: bool = True,
) -> list[dict[str, float]]:
    """Minibatch passes over the decisions, stopped early by the KL guard (value-only steps
    without `policy`)."""
    cfg = learner.ppo
    steps = []
    for _ in range(cfg.epochs):
        order = torch.randperm(decisions.state.shape[0], generator=learner.generator)
        for mb in order.split(cfg.minibatch_size):
            part = Decisions._make(t[mb.to(learner.device)] for t in decisions)
            demo_batch = demos.sample(cfg.bc_batch_size)  # drawn in the warm-up too
            steps.append(learner.ppo_step(part, demo_batch, weight, policy=policy))
            if (
                policy
                and cfg.target_kl is not None
                and steps[-1]["ppo/approx_kl"] > 1.5 * cfg.target_kl
            ):
                return steps
    return steps

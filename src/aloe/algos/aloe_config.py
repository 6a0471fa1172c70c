"""ALOE's settings (`--aloe.*`): what each field changes, its paper value or why it is an
open choice, and the checks a run's config must pass (the learner and update are in
aloe.algos.aloe)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

from aloe.algos.aloe_math import BestOfNReduce, TargetReduce
from aloe.errors import require

ValueSteps = Literal["full", "data"]
AdvantageKind = Literal["pess", "lcb"]
UpdateSampler = Literal["auto", "flow", "one-step"]


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
    with its own Euler steps, as the paper samples π; one-step = μ(s, ℓ, ε), an MLP
    distilled to the flow's chunk from the same noise ε after every actor step and every
    `onestep_bc_every`-th BC step (aloe.policies.onestep, as in flow Q-learning; the compact
    flow actor only); auto = one-step for the compact flow actor, flow for a LeRobot VLA.
    The actor acts with its own steps either way. The smoke, default and mt10 presets use
    auto since the 5-seed learning check (docs/speed.md: success 0.55 ± 0.15 against flow's
    0.53 ± 0.08, each iteration 0.56× the time); the paper preset keeps flow."""
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
                "must be auto, flow or one-step",
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
        return AloeConfig(
            critic_steps=20, actor_steps=10, num_value_samples=2, update_sampler="auto"
        )
    if name in ("default", "mt10"):  # default: ≤ 20 minutes on 2 CPU cores (README)
        return AloeConfig(
            critic_steps=400, actor_steps=200, num_value_samples=2, update_sampler="auto"
        )
    return AloeConfig()  # paper: Appendix C (polyak 0.005), π sampled by its own steps


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
        config.update_sampler != "one-step",
        "config field aloe.update_sampler",
        config.update_sampler,
        "must be flow or auto with actor_kind lerobot (one-step distils the compact flow actor)",
    )

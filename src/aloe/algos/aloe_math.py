"""ALOE's equations as pure functions, in the order of Algorithm 1 (lines 4–15).

Critic: the target ensemble read at (s_{t+n}, a'), the chunked TD target y (Eq. 7), the
ensemble's loss, MSE or HL-Gauss (Eq. 8), and the Polyak step of the target (line 8).
Actor: Q_pess (Eq. 9), V^π from chunks sampled from π_θ (Eq. 10), the clipped exponential
weights (Eq. 10–11) and the weighted flow-matching loss (Eq. 15). The learner that applies
them, and the reasons behind their settings, are `aloe.algos.aloe`'s; Q_pess and V^π are
also every evaluation's (Q traces, OPE, `aloe.load_run`).

Beyond the paper (options of `AloeConfig`, off by default): the confidence-gated advantage
(`member_values`, `confidence_bound`) and the best of N chunks of π by the critic
(`best_of_n_index`, `sample_best`), for acting and for Eq. 7's a'.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, overload

import numpy as np
import torch
from torch import Generator, Tensor, nn

from aloe.critics.hl_gauss import HLGauss
from aloe.data import ChunkBatch
from aloe.policies.base import ChunkSampling

TargetReduce = Literal["min", "mean", "member"]
BestOfNReduce = Literal["min", "mean"]
CriticFn = Callable[..., Tensor]  # (state, task_index, actions[, valid[, time]]) -> (K, B)


# Critic update (Alg. 1 lines 4–9).


def reduce_target(next_q: Tensor, mode: TargetReduce) -> Tensor:
    """Q_φ⁻(s_{t+n}, a') of the target ensemble (K, B) -> (B,) for min/mean, (K, B) for member."""
    if mode == "min":
        return next_q.min(dim=0).values
    if mode == "mean":
        return next_q.mean(dim=0)
    if mode == "member":
        return next_q
    raise ValueError(f"target_reduce must be 'min', 'mean' or 'member', got {mode!r}")


def td_target(batch: ChunkBatch, next_q_target: Tensor) -> Tensor:
    """Chunked TD target y, (B,) or (K, B) like next_q_target.

    batch.reward = Σ_{k<n} γ^k r_{t+k}, batch.discount = γ^n and batch.bootstrap = 0 where
    the chunk reaches a termination (success or failure), 1 otherwise (truncation).
    """
    return batch.reward + batch.discount * batch.bootstrap * next_q_target  # Eq. 7


def critic_loss(
    q: Tensor, y: Tensor, mask: Tensor | None = None
) -> tuple[Tensor, dict[str, float]]:
    """Eq. 8 for values q (K, B) and targets y (B,) or (K, B), treated as constants; `mask`
    (K, B) keeps each member's rows (`critic.bootstrap`), None = every row."""
    err = (q - y.detach()).square()
    loss = (
        err.mean() if mask is None else masked_mean(err, mask)
    )  # Eq. 8: 1/K Σ_i E_D[(Q_φ_i − y)²]
    return loss, value_metrics(loss, q, y)


def hl_gauss_loss(
    logits: Tensor, y: Tensor, bins: HLGauss, mask: Tensor | None = None
) -> tuple[Tensor, dict[str, float]]:
    """Eq. 8 with `critic.loss = hl-gauss`: each member's cross-entropy against y smoothed
    over the bins, logits (K, B, O), y (B,) or (K, B); Q_φ_i = the expectation."""
    ce = bins.cross_entropy(logits, y.expand(logits.shape[:2]))
    loss = ce.mean() if mask is None else masked_mean(ce, mask)
    return loss, value_metrics(loss, bins.value(logits), y)


def masked_mean(per_row: Tensor, mask: Tensor) -> Tensor:
    """The mean of per-member, per-row terms (K, B) over the rows `mask` keeps."""
    return (per_row * mask).sum() / mask.sum().clamp_min(1.0)


def bootstrap_mask(k: int, b: int, p: float, generator: Generator | None) -> Tensor | None:
    """Per-member Bernoulli(p) masks (K, B) over the batch rows; None at p = 1 (no draw, so
    the update's random stream is the paper's)."""
    if p >= 1.0:
        return None
    return (
        torch.rand(k, b, generator=generator, device=generator.device if generator else None) < p
    ).float()


def value_metrics(loss: Tensor, q: Tensor, y: Tensor) -> dict[str, float]:
    """The critic step's metrics from its loss, values (K, B) and targets."""
    q = q.detach()
    return {
        "critic/loss": float(loss.detach()),
        "critic/q_mean": float(q.mean()),
        "critic/q_min": float(q.min()),
        "critic/q_max": float(q.max()),
        "critic/q_member_std": float(q.std(dim=0, correction=0).mean()),
        "critic/target_mean": float(y.detach().mean()),
    }


def polyak_update(target: nn.Module, online: nn.Module, omega: float) -> None:
    """Move the target's parameters towards the online ones; copy buffers (normalisers)."""
    with torch.no_grad():
        for p_target, p in zip(target.parameters(), online.parameters(), strict=True):
            p_target.lerp_(p, omega)  # Alg. 1 line 8: φ⁻ ← ω φ + (1 − ω) φ⁻
        for b_target, b in zip(target.buffers(), online.buffers(), strict=True):
            b_target.copy_(b)


# Actor update (Alg. 1 lines 10–15).


@overload
def q_pess(q: Tensor) -> Tensor: ...


@overload
def q_pess(q: np.ndarray) -> np.ndarray: ...


def q_pess(q: Tensor | np.ndarray) -> Tensor | np.ndarray:
    """Pessimistic value (...) of an ensemble's values (K, ...): training's, and every
    evaluation's (Q traces, OPE), which read numpy arrays and get one back."""
    if isinstance(q, np.ndarray):
        return q_pess(torch.from_numpy(q)).numpy()
    return q.min(dim=0).values  # Eq. 9: Q_pess = min_i Q_φ_i


@torch.no_grad()
def _sampled_q(
    critic: CriticFn,
    policy: ChunkSampling,
    state: Tensor,
    task_index: Tensor,
    num_samples: int,
    generator: Generator | None,
    images: Tensor | None,
    valid: Tensor | None,
    time: Tensor | None,
) -> Tensor:
    """Every member's Q (K, B·N) of N = `num_samples` chunks sampled from π_θ per state, row
    b·N + n the n-th chunk of state b; scored over the steps `valid` marks with the clock
    `time` (as `estimate_value` documents)."""
    chunks = policy.sample(state, task_index, num_samples, generator, images=images)
    chunks = chunks.flatten(0, 1)
    states = state.repeat_interleave(num_samples, dim=0)
    tasks = task_index.repeat_interleave(num_samples, dim=0)
    if time is None and valid is None:
        return critic(states, tasks, chunks)
    # the same executed steps as the data chunk's, and its clock
    steps = None if valid is None else valid.repeat_interleave(num_samples, dim=0)
    clock = () if time is None else (time.repeat_interleave(num_samples, dim=0),)
    return critic(states, tasks, chunks, steps, *clock)


@torch.no_grad()
def estimate_value(
    critic: CriticFn,
    policy: ChunkSampling,
    state: Tensor,
    task_index: Tensor,
    num_samples: int,
    generator: Generator | None = None,
    images: Tensor | None = None,
    valid: Tensor | None = None,
    time: Tensor | None = None,
) -> Tensor:
    """V^π(s, ℓ) (B,) as the mean Q_pess of `num_samples` chunks sampled from π_θ as it acts
    (its own flow steps, or the one-step sampler distilled from them; `images` for an actor
    that reads pixels), each scored over the steps `valid` (B, h) marks (None: all;
    `AloeConfig.value_steps`); `time` (B, 2) the episode clock, for a critic with
    `critic.time_features`."""
    q = _sampled_q(critic, policy, state, task_index, num_samples, generator, images, valid, time)
    q = q_pess(q)  # Eq. 9 at a' ~ π_θ(·|s, ℓ)
    b = state.shape[0]
    return q.view(b, num_samples).mean(dim=1)  # Eq. 10: V^π = E_{a'~π_θ}[Q_pess(s, a', ℓ)]


def advantage_weights(
    q_data_pess: Tensor, v: Tensor, beta: float, eps_clip: float, normalize: bool = False
) -> tuple[Tensor, dict[str, float]]:
    """Weights w (B,) of the data chunks from Q_pess (B,) and V^π (B,), without gradient."""
    adv = q_data_pess.detach() - v.detach()  # Eq. 10: A = Q_pess − sg(V^π)
    return clipped_weights(adv, beta, eps_clip, normalize)


def clipped_weights(
    adv: Tensor, beta: float, eps_clip: float, normalize: bool = False
) -> tuple[Tensor, dict[str, float]]:
    """Weights w (B,) of advantages A (B,) (Eq. 10's, or `confidence_bound`'s), and metrics."""
    if normalize:
        adv = adv / (adv.std(correction=0) + 1e-6)
    scaled = adv / beta
    w = torch.exp(scaled.clamp(-eps_clip, eps_clip))  # Eq. 11: w = exp(clip(A/β, −ε, ε))
    metrics = {
        "actor/advantage_mean": float(adv.mean()),
        "actor/advantage_std": float(adv.std(correction=0)),
        "actor/weight_mean": float(w.mean()),
        "actor/weight_max": float(w.max()),
        "actor/clip_frac": float((scaled.abs() > eps_clip).float().mean()),
    }
    return w, metrics


@torch.no_grad()
def member_values(
    critic: CriticFn,
    policy: ChunkSampling,
    state: Tensor,
    task_index: Tensor,
    num_samples: int,
    generator: Generator | None = None,
    images: Tensor | None = None,
    valid: Tensor | None = None,
    time: Tensor | None = None,
) -> Tensor:
    """Each member's V_k^π(s) (K, B): the mean of Q_φ_k over the same `num_samples` chunks
    sampled from π_θ (arguments as `estimate_value`'s, which draws the same chunks)."""
    q = _sampled_q(critic, policy, state, task_index, num_samples, generator, images, valid, time)
    b = state.shape[0]
    return q.view(q.shape[0], b, num_samples).mean(dim=2)


def confidence_bound(adv_members: Tensor, kappa: float) -> Tensor:
    """The confidence-gated advantage (B,) of members' advantages A_k = Q_k − V_k (K, B).

    The interval mean_k A_k ± κ·std_k A_k (std over the K members) bounds the advantage the
    ensemble vouches for; the gate keeps its end nearest zero: the lower bound
    mean − κ·std where that is > 0, the upper bound mean + κ·std where that is < 0, and 0
    where the interval holds 0. A chunk the members disagree on thus gets A ≈ 0, w ≈ 1
    (plain BC) from Eq. 11, not the large (or vanishing) weight of one optimistic (or
    pessimistic) member; a chunk they agree on keeps its advantage, shrunk by κ·std.
    """
    mean = adv_members.mean(dim=0)
    width = kappa * adv_members.std(dim=0, correction=0)
    return torch.sign(mean) * (mean.abs() - width).clamp_min(0.0)


def weighted_flow_loss(per_sample_loss: Tensor, w: Tensor) -> tuple[Tensor, dict[str, float]]:
    """Eq. 15: the advantage-weighted flow-matching loss, from the actor's per-sample loss (B,)."""
    loss = (w.detach() * per_sample_loss).mean()  # Eq. 15: E_D[w ||ε − a − f_θ(ã, s, ℓ)||²]
    metrics = {
        "actor/loss": float(loss.detach()),
        "actor/flow_loss": float(per_sample_loss.detach().mean()),
    }
    return loss, metrics


# Best of N chunks of π by the critic (Q-chunking's best-of-N sampling).


def best_of_n_index(q: Tensor, reduce: BestOfNReduce = "min") -> Tensor:
    """Which of N chunks to take: the members' values (K, B, N) -> index (B,) of the chunk
    with the highest Q_pess (Eq. 9, "min") or the highest mean over members ("mean");
    ties go to the first."""
    if reduce == "min":
        score = q_pess(q)
    elif reduce == "mean":
        score = q.mean(dim=0)
    else:
        raise ValueError(f"best_of_n_reduce must be 'min' or 'mean', got {reduce!r}")
    return score.argmax(dim=-1)


@torch.no_grad()
def sample_best(
    critic: CriticFn,
    policy: ChunkSampling,
    state: Tensor,
    task_index: Tensor,
    n: int,
    reduce: BestOfNReduce = "min",
    generator: Generator | Sequence[Generator] | None = None,
    images: Tensor | None = None,
    time: Tensor | None = None,
) -> Tensor:
    """Chunks (B, h, A): per row, the best by the critic (`best_of_n_index`) of `n` chunks
    sampled from π_θ in one call, scored over all h steps; `time` (B, 2) the episode clock
    for a critic that reads it. With n = 1 the critic is not called: the chunk is
    `policy.sample(state, task_index, 1, generator)`'s, drawn from the same noise."""
    chunks = policy.sample(state, task_index, n, generator, images=images)
    if n == 1:
        return chunks[:, 0]
    b = state.shape[0]
    states = state.repeat_interleave(n, dim=0)
    tasks = task_index.repeat_interleave(n, dim=0)
    clock = None if time is None else time.repeat_interleave(n, dim=0)
    q = critic(states, tasks, chunks.flatten(0, 1), None, clock)
    pick = best_of_n_index(q.view(q.shape[0], b, n), reduce)
    return chunks[torch.arange(b, device=chunks.device), pick]

"""PPO+SBC's pure functions (`aloe.algos.ppo_sbc` applies them): the Gaussian likelihood
of an executed chunk, PPO's clipped surrogate, chunk-level GAE, the adaptive BC weight and
the self-demonstration buffer's rows.

Chunk-level GAE (`chunk_gae`). Decision j covers n_j ≤ e steps with discounted reward
R_j = Σ_{k<n_j} γ^k r, then
    δ_j = R_j + γ^{n_j} b_j V(s_{j+1}) − V(s_j),   A_j = δ_j + γ^{n_j} λ (1 − last_j) A_{j+1},
with b_j = 0 at a termination (success or failure) and last_j = 1 on an episode's last
decision; the value target is A_j + V(s_j). Rewards are multiplied by `reward_scale` first.

Adaptive weight (`sbc_weight`). L = L_PPO + w_k L_BC with
    s̄_k = (1 − ρ) s̄_{k−1} + ρ ŝ_k   (ŝ_k: the success rate of iteration k's rollouts),
    w_k = w_max − (w_max − w_min) s̄_k.
While the policy mostly fails, PPO's advantages are sparse and noisy and the BC term holds
it on successful behaviour; as it succeeds, BC gives way and PPO refines (shortens) what
works; a collapse raises s̄'s complement and pulls it back. s̄ starts at the first ŝ.

Self-demonstration buffer (`self_demo_rows`): `sbc_buffer_episodes` successful episodes
per task without operator help, initially the demonstrations. Rule `recent` (FIFO): the policy's own
successes displace the oldest. Rule `shortest`: the buffer keeps the fewest steps to success
(ties: the most recent), so BC pulls towards the fastest trials found so far, the paper's
headline measure.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from aloe import data as D

LOG_2PI = math.log(2.0 * math.pi)
BUFFER_RULES = ("recent", "shortest")


def gaussian_log_prob(actions: Tensor, mean: Tensor, log_std: Tensor, valid: Tensor) -> Tensor:
    """log N(a; μ, diag σ²) summed over valid steps and action dims: (B,) for (B, e, A)."""
    z = (actions - mean) / log_std.exp()
    per_step = (-0.5 * z.square() - log_std - 0.5 * LOG_2PI).sum(-1)  # (B, e)
    return (per_step * valid).sum(-1)


def ppo_clip_loss(
    logp_new: Tensor, logp_old: Tensor, advantage: Tensor, clip: float
) -> tuple[Tensor, dict[str, float]]:
    """PPO's clipped surrogate −E[min(ρA, clip(ρ, 1 − ε, 1 + ε)A)], ρ = π/π_old."""
    log_ratio = logp_new - logp_old.detach()
    ratio = log_ratio.exp()
    adv = advantage.detach()
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1.0 - clip, 1.0 + clip) * adv)
    loss = -surrogate.mean()
    with torch.no_grad():
        metrics = {
            "ppo/loss": float(loss),
            "ppo/ratio_mean": float(ratio.mean()),
            "ppo/clip_frac": float(((ratio - 1.0).abs() > clip).float().mean()),
            "ppo/approx_kl": float(((ratio - 1.0) - log_ratio).mean()),
        }
    return loss, metrics


def chunk_gae(
    reward: Tensor,
    discount: Tensor,
    bootstrap: Tensor,
    value: Tensor,
    next_value: Tensor,
    last: Tensor,
    lam: float,
) -> tuple[Tensor, Tensor]:
    """Advantages and value targets (D,) of decisions in time order (see module docstring)."""
    delta = reward + discount * bootstrap * next_value - value  # δ_j
    adv = torch.zeros_like(delta)
    running = torch.zeros((), dtype=delta.dtype)
    for j in range(delta.shape[0] - 1, -1, -1):
        running = delta[j] + discount[j] * lam * (1.0 - last[j]) * running  # A_j
        adv[j] = running
    return adv, adv + value


def update_success_average(average: float | None, success_rate: float, rate: float) -> float:
    """s̄_k = (1 − ρ) s̄_{k−1} + ρ ŝ_k, starting from the first ŝ."""
    return success_rate if average is None else (1.0 - rate) * average + rate * success_rate


def sbc_weight(success_average: float, w_min: float, w_max: float) -> float:
    """w_k = w_max − (w_max − w_min) s̄_k: the BC weight falls as the policy succeeds."""
    return w_max - (w_max - w_min) * min(1.0, max(0.0, success_average))


def self_demo_rows(frames: D.Frames, capacity: int, rule: str = "recent") -> np.ndarray:
    """Bool mask (N,) of the buffer: per task, `capacity` successful episodes without help,
    the latest (`recent`) or the shortest, ties to the latest (`shortest`). Per task, so that
    in a multi-task run the tasks that succeed often do not displace the others' trials (and
    demonstrations) and `shortest` does not keep only the tasks with short episodes."""
    episode = np.asarray(frames[D.EPISODE])
    helped = np.isin(episode, episode[np.asarray(frames[D.SOURCE]).astype(str) == "human"])
    won = frames.successful_episodes() & ~helped
    task = np.asarray(frames[D.TASK]) if D.TASK in frames else np.zeros(len(episode), int)
    keep = []
    for t in np.unique(task[won]):
        ok, length = np.unique(episode[won & (task == t)], return_counts=True)
        if rule == "shortest":  # by length, then the latest first
            keep.append(ok[np.lexsort((-ok, length))][:capacity])
        else:
            keep.append(ok[-capacity:])
    return np.isin(episode, np.concatenate(keep)) if keep else np.zeros(len(episode), bool)

"""Real-time chunking (Black et al. 2025, "Real-Time Execution of Action Chunking Flow
Policies", arXiv 2506.07339): the next chunk is inpainted to agree with the actions still to
be executed from the previous one.

While chunk k+1 is computed the robot keeps executing chunk k, so the first d actions of
chunk k+1 (d = the inference delay in control steps) will never run: they must equal what
runs instead, and the actions after them should continue chunk k smoothly. RTC integrates
the flow with a guidance term pulling the chunk's clean estimate Â towards Y = the rest
of chunk k (the "prefix", L actions from the new observation on) with weights W: 1 on the
d frozen actions, decaying to 0 over the rest of the overlap (their Eq. 5), 0 beyond it.
In aloe's time convention (Eq. 15, ã = η a + (1 − η) ε, f_θ ≈ ε − a):

    Â = ã − (1 − η) f_θ(ã, η)                      (the chunk ã's flow points to)
    g = (Y − Â)ᵀ diag(W) ∂Â/∂ã                      (a vector-Jacobian product)
    ã ← ã + Δη · (−f_θ + min(β, (1 − η) / (η r²)) · g),   r² = (1 − η)² / (η² + (1 − η)²)

β caps the guidance near η = 0 (the paper's β = 5). lerobot's `policies/rtc/` and RLinf's
`rtc_guidance.py` implement the same rule in the other time convention (τ from noise at 1).
The server runs it (it needs the network); `RobotClient(rtc=True)` sends the prefix.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Generator, Tensor

from aloe.nn import evaluating
from aloe.policies.flow import VelocityFn

BETA = 5.0  # the paper's guidance cap


def prefix_weights(horizon: int, length: int, delay: int) -> Tensor:
    """W (h,): 1 on the first `delay` steps, c·(e^c − 1)/(e − 1) with c = (L − i)/(L − d + 1)
    on the rest of the `length` overlapping steps (their Eq. 5), 0 after them."""
    if not 0 <= delay <= length <= horizon:
        raise ValueError(f"need 0 <= delay ({delay}) <= length ({length}) <= horizon ({horizon})")
    i = torch.arange(horizon, dtype=torch.float64)
    c = (length - i) / (length - delay + 1)
    soft = c * torch.expm1(c) / (math.e - 1)
    return torch.where(i < delay, 1.0, torch.where(i < length, soft, 0.0)).float()


def guided_integrate(
    velocity: VelocityFn,
    noise: Tensor,
    num_steps: int,
    target: Tensor,
    weights: Tensor,
    beta: float = BETA,
) -> Tensor:
    """Euler steps from ã = ε at η = 0 to η = 1, guided towards `target` (B, h, A) with
    `weights` (h,): the inpainted chunk, in the velocity's (normalised) units."""
    x = noise
    dt = 1.0 / num_steps
    w = weights.to(noise)[None, :, None]
    for k in range(num_steps):
        eta = k * dt
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            f = velocity(xg, torch.full((x.shape[0],), eta, device=x.device, dtype=x.dtype))
            clean = xg - (1.0 - eta) * f  # Â: Eq. 15 solved for a
            (g,) = torch.autograd.grad(clean, xg, grad_outputs=(target - clean) * w)
        r2 = (1.0 - eta) ** 2 / (eta**2 + (1.0 - eta) ** 2)
        scale = beta if eta == 0 else min(beta, (1.0 - eta) / (eta * r2))
        x = x.detach() + dt * (-f.detach() + scale * g)
    return x


def sample_inpainted(
    actor: Any,
    state: Tensor,
    task_index: Tensor,
    prefix: Tensor,
    delay: int,
    generator: Generator | None = None,
    beta: float = BETA,
) -> Tensor:
    """One chunk (h, A) for one observation (state (1, S), task_index (1,)), inpainted to the
    prefix (L, A) in environment units. Draws the same noise as `actor.sample(..., 1, g)`.
    The flow is the actor's as it acts (`FlowPolicy.acting_velocity`: an advantage-conditioned
    actor's indicator and classifier-free guidance included)."""
    h = actor.horizon
    a_dim = actor.action_dim
    with evaluating(actor):
        with torch.no_grad():
            velocity = actor.acting_velocity(state, task_index)
            noise = torch.randn((1, h, a_dim), generator=generator, device=state.device)
        target = torch.zeros((1, h, a_dim), device=state.device)
        target[0, : len(prefix)] = actor.action_norm.normalize(prefix.to(state.device))
        weights = prefix_weights(h, len(prefix), delay)
        a = guided_integrate(
            velocity,
            noise.to(state.dtype),
            actor.config.num_flow_steps,
            target,
            weights,
            beta,
        )
    return actor.action_norm.unnormalize(a.detach()).clamp(-1.0, 1.0)[0]

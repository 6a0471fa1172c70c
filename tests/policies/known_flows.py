"""Known targets with their exact flow: the velocity field of Eq. 15's path for a mixture of
Gaussians, which `euler_integrate` turns into the flow's samples (test_flow_sampler.py) and
the one-step sampler is distilled from (test_onestep.py)."""

from __future__ import annotations

import torch
from torch import Tensor

from aloe.policies.flow import VelocityFn


def mixture_velocity(means: list[float], std: float) -> VelocityFn:
    """The exact f*(ã, η) = E[ε − a | ã] of Eq. 15's path for a ~ an equal mixture of
    N(μ_j, std²) and ε ~ N(0, 1), per coordinate: ã = η a + (1 − η) ε is, given component
    j, Gaussian with mean η μ_j and variance v_j = η² std² + (1 − η)²."""

    def velocity(x: Tensor, eta: Tensor) -> Tensor:
        e = eta[:, None, None]
        v = e.square() * std**2 + (1 - e).square()
        mu = torch.tensor(means, dtype=x.dtype)
        centred = x[..., None] - e[..., None] * mu  # (B, h, A, J)
        v = v[..., None]
        weight = torch.softmax(-centred.square() / (2 * v), dim=-1)  # posterior of j
        mean_a = mu + e[..., None] * std**2 / v * centred  # E[a | ã, j]
        mean_eps = (1 - e[..., None]) / v * centred  # E[ε | ã, j]
        return (weight * (mean_eps - mean_a)).sum(-1)

    return velocity

"""The sampler on known distributions: `euler_integrate` fed the exact velocity field of a
target must reproduce its spread and its modes at the actor's own step count, and must not
at 2 steps (one Euler step returns E[a] exactly; few steps collapse π onto its mean, which is
why the update's a' and V^π samples always use the actor's own steps: issue 32)."""

from __future__ import annotations

import pytest
import torch
from known_flows import mixture_velocity
from torch import Tensor

from aloe.policies.flow import ActorConfig, VelocityFn, euler_integrate

OWN_STEPS = ActorConfig().num_flow_steps  # π as it acts (paper: 10)
N = 20_000


def samples(velocity: VelocityFn, steps: int) -> Tensor:
    noise = torch.randn(N, 1, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return euler_integrate(velocity, noise, steps).flatten()


def test_one_step_returns_the_mean() -> None:
    """One Euler step from ε lands on E[a] whatever ε was: not a sample."""
    out = samples(mixture_velocity([0.3], 0.1), 1)
    assert torch.allclose(out, torch.full_like(out, 0.3), atol=1e-9)


def test_own_steps_reproduce_a_narrow_gaussian_and_two_steps_do_not() -> None:
    """σ = 0.1: the actor's own 10 steps give ≥ 55 % of the std (measured 0.062; Euler
    under-disperses a narrow target), 50 steps ≥ 85 %; 2 steps give < 15 % (0.0099)."""
    field = mixture_velocity([0.2], 0.1)
    own = samples(field, OWN_STEPS)
    assert OWN_STEPS == 10
    assert own.mean().item() == pytest.approx(0.2, abs=0.01)
    assert 0.055 <= own.std().item() <= 0.105
    assert 0.085 <= samples(field, 50).std().item() <= 0.105
    assert samples(field, 2).std().item() < 0.015


def test_own_steps_keep_two_modes_apart_and_two_steps_do_not() -> None:
    """a = ±0.5 (component std 0.02): at the actor's own steps < 5 % of samples land between
    the modes (|a| < 0.25; measured 0.5 %) and both modes hold 50 ± 3 %; at 2 steps > 50 % do
    (measured 72 %)."""
    field = mixture_velocity([-0.5, 0.5], 0.02)
    own = samples(field, OWN_STEPS)
    assert (own.abs() < 0.25).double().mean().item() < 0.05
    assert (own > 0).double().mean().item() == pytest.approx(0.5, abs=0.03)
    assert (samples(field, 2).abs() < 0.25).double().mean().item() > 0.5

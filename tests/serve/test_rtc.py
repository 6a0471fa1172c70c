"""Real-time chunking: the weights of Eq. 5 by hand, and an inpainted chunk that keeps the
actions still queued."""

from __future__ import annotations

import math

import pytest
import torch

from aloe.policies.flow import ActorConfig, FlowPolicy, euler_integrate
from aloe.policies.rtc import guided_integrate, prefix_weights, sample_inpainted


def test_prefix_weights_by_hand():
    # h = 6, overlap L = 4, delay d = 2: 1, 1, then c = (L - i)/(L - d + 1) = 2/3, 1/3, then 0
    w = prefix_weights(6, 4, 2)
    soft = [c * math.expm1(c) / (math.e - 1) for c in (2 / 3, 1 / 3)]
    assert w.tolist() == pytest.approx([1.0, 1.0, *soft, 0.0, 0.0])
    assert prefix_weights(3, 3, 3).tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError):
        prefix_weights(4, 5, 1)


def test_zero_weights_are_plain_euler_integration():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 3)

    def velocity(x, t):
        return net(x) * t[:, None, None]

    noise = torch.randn(2, 5, 3)
    with torch.no_grad():
        plain = euler_integrate(velocity, noise, 4)
    guided = guided_integrate(velocity, noise, 4, torch.ones(2, 5, 3), torch.zeros(5))
    torch.testing.assert_close(guided, plain)


def test_inpainted_chunk_keeps_the_frozen_actions():
    torch.manual_seed(0)
    actor = FlowPolicy(
        ActorConfig(hidden_dim=32, num_layers=1, num_heads=2),
        state_dim=39,
        action_dim=4,
        num_tasks=1,
        horizon=10,
    )
    state, task = torch.zeros(1, 39), torch.zeros(1, dtype=torch.long)
    prefix = torch.linspace(-0.5, 0.5, 6 * 4).reshape(6, 4)
    plain = actor.sample(state, task, 1, torch.Generator().manual_seed(1))[0, 0]
    inpainted = sample_inpainted(actor, state, task, prefix, 3, torch.Generator().manual_seed(1))
    frozen = (inpainted[:3] - prefix[:3]).abs().max()
    assert frozen < 0.5 * (plain[:3] - prefix[:3]).abs().max()
    assert inpainted.shape == (10, 4) and inpainted.abs().max() <= 1.0
    # the parameters got no gradient: guidance differentiates the chunk only
    assert all(p.grad is None for p in actor.parameters())

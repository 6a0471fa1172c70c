"""The one-step sampler μ(s, ℓ, ε): distilled from a flow for the same noise, it keeps the
flow's spread and modes on known targets, where 2 Euler steps do not, and matches a trained
actor ε for ε; its loss by hand; its noise is the actor's; no gradient reaches the actor."""

from __future__ import annotations

import math

import pytest
import torch
from known_flows import mixture_velocity
from torch import Tensor

from aloe.algos.optimised import OptimConfig, OptimisedModule
from aloe.nn import Normalizer
from aloe.policies.base import chunk_noise
from aloe.policies.flow import ActorConfig, FlowPolicy, VelocityFn, euler_integrate
from aloe.policies.onestep import OneStepPolicy, distil, distillation_loss

OWN_STEPS = ActorConfig().num_flow_steps
N = 20_000


def distilled_on(field: VelocityFn, steps: int) -> OneStepPolicy:
    """μ over one action slot (one state, one task) distilled from the flow's own steps on
    `field`, for fresh noise each step."""
    torch.manual_seed(0)
    mu = OneStepPolicy(1, 1, 1, horizon=1, hidden_dim=128, num_layers=3)
    opt = torch.optim.Adam(mu.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    state, task = torch.zeros(256, 1), torch.zeros(256, dtype=torch.long)
    for _ in range(steps):
        eps = torch.randn(256, 1, 1, generator=g)
        loss, _ = distillation_loss(mu(state, task, eps), euler_integrate(field, eps, OWN_STEPS))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return mu


def compared(field: VelocityFn, steps: int) -> tuple[Tensor, Tensor, Tensor]:
    """μ's (after `steps`), the flow's (own steps) and 2 Euler steps' samples from the same
    N noises."""
    eps = torch.randn(N, 1, 1, generator=torch.Generator().manual_seed(9))
    mu = distilled_on(field, steps)
    with torch.no_grad():
        one = mu(torch.zeros(N, 1), torch.zeros(N, dtype=torch.long), eps)
    return one.flatten(), *(euler_integrate(field, eps, k).flatten() for k in (OWN_STEPS, 2))


def test_one_step_keeps_a_narrow_gaussians_spread_where_two_euler_steps_do_not() -> None:
    """σ = 0.1 at 0.2: μ's std within 20 % of the flow's (both 0.061: Euler's own
    under-dispersion, test_flow_sampler.py); 2 Euler steps give 16 % of it (0.0098)."""
    one, flow, two = compared(mixture_velocity([0.2], 0.1), steps=300)
    assert one.mean().item() == pytest.approx(0.2, abs=0.01)
    assert one.std().item() == pytest.approx(flow.std().item(), rel=0.2)
    assert two.std().item() < 0.2 * flow.std().item()


def test_one_step_keeps_two_modes_apart_where_two_euler_steps_do_not() -> None:
    """a = ±0.5 (component std 0.02): < 5 % of μ's samples fall between the modes (|a| <
    0.25; measured 0.76 %, the flow 0.65 %), each mode holds 50 ± 3 %, its std is within
    20 % of the flow's; 2 Euler steps put 73 % between them."""
    one, flow, two = compared(mixture_velocity([-0.5, 0.5], 0.02), steps=1000)
    assert (one.abs() < 0.25).double().mean().item() < 0.05
    assert (one > 0).double().mean().item() == pytest.approx(0.5, abs=0.03)
    assert one.std().item() == pytest.approx(flow.std().item(), rel=0.2)
    assert (two.abs() < 0.25).double().mean().item() > 0.5


# A trained actor: chunks 0.5·tanh(W_ℓ s) + N(0, 0.1²) per slot, two instructions.
S, A, H, T = 4, 2, 4, 2


def toy_chunks(n: int, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    w = torch.randn(T, S, H * A, generator=torch.Generator().manual_seed(0)) / math.sqrt(S)
    state = torch.randn(n, S, generator=g)
    task = torch.randint(0, T, (n,), generator=g)
    mean = 0.5 * torch.tanh(torch.einsum("bs,bsk->bk", state, w[task])).view(n, H, A)
    return state, task, (mean + 0.1 * torch.randn(n, H, A, generator=g)).clamp(-1, 1)


def trained_actor() -> FlowPolicy:
    """A smoke-sized actor (32 wide, one layer) after 300 BC steps on the toy chunks."""
    torch.manual_seed(0)
    actor = FlowPolicy(ActorConfig(hidden_dim=32, num_layers=1, num_heads=2), S, A, T, horizon=H)
    opt = OptimisedModule(actor, 1e-3, OptimConfig(warmup_steps=5))
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        state, task, chunks = toy_chunks(64, g)
        actor.train()
        loss = actor.flow_loss_per_sample(state, task, chunks, torch.ones(64, H), g).mean()
        opt.step(loss, {}, "actor")
    return actor


def test_one_step_matches_a_trained_actor_for_the_same_noise() -> None:
    """Distilled on 8192 (state, ε, flow chunk) triples (1000 steps of 256), μ's chunks from
    the noise the actor draws from the same generator, at fresh states: RMSE ≤ 0.12 × the
    flow's per-dimension std over states and noise (measured 0.089) and ≤ 0.25 × its spread
    at a state (0.179), where a different ε is 1.5 × that spread away; μ's spread at a
    state is the flow's to 10 % (0.99)."""
    actor = trained_actor()
    torch.manual_seed(1)
    mu = OneStepPolicy.distilling(actor, hidden_dim=256, num_layers=3)
    g = torch.Generator().manual_seed(3)
    state, task, _ = toy_chunks(8192, g)
    eps = chunk_noise(8192, 1, (H, A), g, "cpu")
    target = actor.integrate(state, task, eps)
    opt = torch.optim.Adam(mu.parameters(), lr=3e-3)
    for _ in range(1000):
        rows = torch.randint(0, 8192, (256,), generator=g)
        loss, _ = distillation_loss(mu(state[rows], task[rows], eps[rows]), target[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
    state, task, _ = toy_chunks(256, torch.Generator().manual_seed(5))
    flow = actor.sample(state, task, 16, torch.Generator().manual_seed(7))  # (256, 16, H, A)
    one = mu.sample(state, task, 16, torch.Generator().manual_seed(7))
    other = mu.sample(state, task, 16, torch.Generator().manual_seed(8))
    rmse = (one - flow).square().mean().sqrt().item()
    spread = flow.std(dim=1).mean().item()  # over ε at a state
    assert rmse <= 0.12 * flow.flatten(0, 1).std(dim=0).mean().item()
    assert rmse <= 0.25 * spread
    assert (other - flow).square().mean().sqrt().item() > spread
    assert one.std(dim=1).mean().item() == pytest.approx(spread, rel=0.1)


def test_distillation_loss_by_hand() -> None:
    chunks = torch.tensor([[[1.0, 0.0]], [[0.0, 0.0]]])  # (2, 1, 2)
    target = torch.tensor([[[0.0, 0.0]], [[0.0, 2.0]]])
    loss, metrics = distillation_loss(chunks, target)
    assert loss.item() == pytest.approx((1 + 4) / 4)  # the mean over every slot
    spread = (0 + 1) / 2  # per-slot variance over the rows: 0 and 1
    assert metrics["onestep/mse"] == pytest.approx(1.25)
    assert metrics["onestep/rel_err"] == pytest.approx(math.sqrt(1.25 / spread))


def test_sample_maps_the_noise_the_actor_draws_in_environment_units() -> None:
    """μ.sample draws ε as FlowPolicy.sample does (`chunk_noise`) and returns the
    unnormalised, clipped chunk of that ε, one per sample, for every row."""
    torch.manual_seed(0)
    mu = OneStepPolicy(
        3, 2, 2, horizon=4, action_normalizer=Normalizer.from_stats([0.5, 0.0], [2.0, 0.1])
    )
    state, task = torch.randn(5, 3), torch.tensor([0, 1, 1, 0, 1])
    out = mu.sample(state, task, 3, torch.Generator().manual_seed(4))
    eps = chunk_noise(5, 3, (4, 2), torch.Generator().manual_seed(4), "cpu")
    with torch.no_grad():
        expect = mu.action_norm.unnormalize(mu(state, task, eps)).clamp(-1, 1)
    assert out.shape == (5, 3, 4, 2)
    assert torch.equal(out.flatten(0, 1), expect)


def test_distillation_leaves_no_gradient_on_the_actor() -> None:
    actor = FlowPolicy(ActorConfig(hidden_dim=16, num_layers=1, num_heads=2), S, A, T, horizon=H)
    mu = OneStepPolicy.distilling(actor, hidden_dim=16, num_layers=1)
    loss, _ = distil(mu, actor, torch.randn(6, S), torch.zeros(6, dtype=torch.long), None)
    loss.backward()
    assert all(p.grad is None for p in actor.parameters())
    assert all(p.grad is not None for p in mu.parameters() if p.requires_grad)

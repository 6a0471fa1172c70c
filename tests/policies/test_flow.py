"""The actor: Eq. 15's convention, Euler sampling, shapes, save→load, determinism."""

from __future__ import annotations

import math

import pytest
import torch

from aloe.nn import Normalizer, sinusoidal_embedding
from aloe.policies.base import Actor
from aloe.policies.flow import (
    ActorConfig,
    FlowPolicy,
    euler_integrate,
    flow_matching_loss,
    interpolate,
)

S, A, H, T = 5, 2, 4, 3


def tiny_policy(seed: int = 0, **overrides: float) -> FlowPolicy:
    torch.manual_seed(seed)
    cfg = ActorConfig(hidden_dim=16, num_layers=1, num_heads=2, num_flow_steps=3)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return FlowPolicy(cfg, state_dim=S, action_dim=A, num_tasks=T, horizon=H)


def inputs(b: int = 6, seed: int = 1) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    state = torch.randn(b, S, generator=g)
    task = torch.randint(0, T, (b,), generator=g)
    actions = torch.rand(b, H, A, generator=g) * 2 - 1
    valid = torch.ones(b, H)
    valid[0, 2:] = 0.0
    return state, task, actions, valid


def test_interpolate_follows_eq15() -> None:
    a = torch.tensor([[[1.0, -1.0]]])
    eps = torch.tensor([[[3.0, 5.0]]])
    noisy, target = interpolate(a, eps, torch.tensor([0.25]))
    # ã = 0.25·a + 0.75·ε ; target ε − a
    assert torch.equal(noisy, torch.tensor([[[2.5, 3.5]]]))
    assert torch.equal(target, torch.tensor([[[2.0, 6.0]]]))
    assert torch.equal(interpolate(a, eps, torch.tensor([1.0]))[0], a)  # η = 1 is the data
    assert torch.equal(interpolate(a, eps, torch.tensor([0.0]))[0], eps)  # η = 0 is noise


def test_flow_loss_by_hand_with_stub_velocity() -> None:
    a = torch.tensor([[[1.0, 0.0], [0.0, 2.0]], [[1.0, 1.0], [9.0, 9.0]]])
    eps = torch.tensor([[[2.0, 1.0], [1.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]]])
    valid = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    seen = {}

    def stub(noisy: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
        seen["eta"] = eta
        return torch.ones_like(noisy)  # f ≡ 1

    loss = flow_matching_loss(stub, a, valid, eps, torch.tensor([0.5, 0.1]))
    # row 0: ε − a − f = [[0, 0], [0, −2]] -> step norms² [0, 4] -> mean 2
    # row 1: ε − a − f = [[−2, −2], padded] -> step norm² 8 (padded step ignored)
    assert torch.allclose(loss, torch.tensor([2.0, 8.0]))
    assert torch.equal(seen["eta"], torch.tensor([0.5, 0.1]))


def test_euler_with_constant_velocity() -> None:
    eps = torch.tensor([[[0.5, -1.0]]])
    c = torch.tensor([2.0, -3.0])
    out = euler_integrate(lambda x, t: c.expand_as(x), eps, num_steps=10)
    # dã/dη = −c over η ∈ [0, 1]  ->  ε − c
    assert torch.allclose(out, eps - c, atol=1e-6)


def test_euler_recovers_the_target_of_a_straight_path() -> None:
    a = torch.tensor([[[0.3, -0.7]]])
    eps = torch.tensor([[[1.5, 2.0]]])
    etas: list[float] = []

    def exact(x: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
        etas.append(float(eta[0]))
        return (x - a) / (1 - eta[:, None, None])  # = ε − a on the path ã(η)

    assert torch.allclose(euler_integrate(exact, eps, num_steps=10), a, atol=1e-5)
    assert etas == pytest.approx([k / 10 for k in range(10)])  # starts at η = 0 (noise)


def test_sample_shape_range_and_protocol() -> None:
    policy = tiny_policy()
    state, task, _, _ = inputs()
    out = policy.sample(state, task, num_samples=3, generator=torch.Generator().manual_seed(0))
    assert out.shape == (6, 3, H, A)
    assert out.abs().max() <= 1.0
    assert policy.sample(state, task).shape == (6, 1, H, A)
    assert isinstance(policy, Actor)
    assert policy.training  # sampling restores the mode


def test_sample_unnormalizes_and_clips() -> None:
    policy = tiny_policy(num_flow_steps=1)
    policy.action_norm = Normalizer.from_stats(torch.tensor([5.0, -5.0]), torch.ones(2))
    state, task, _, _ = inputs()
    out = policy.sample(state, task, num_samples=2)
    assert torch.all(out[..., 0] == 1.0) and torch.all(out[..., 1] == -1.0)


def test_sample_with_one_euler_step_by_hand() -> None:
    """num_steps = 1: a = ε − f_θ(ε, η = 0), the noise drawn as `sample` draws it."""
    policy = tiny_policy().eval()
    state, task, _, _ = inputs(b=2)
    got = policy.sample(state, task, 2, torch.Generator().manual_seed(5), num_steps=1)
    noise = torch.randn((4, H, A), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        cond = policy.condition(state, task).repeat_interleave(2, dim=0)
        want = noise - policy.velocity(noise, torch.zeros(4), cond)
    torch.testing.assert_close(got, want.clamp(-1, 1).view(2, 2, H, A), rtol=0, atol=1e-6)
    default = policy.sample(state, task, 2, torch.Generator().manual_seed(5))
    assert torch.equal(
        default, policy.sample(state, task, 2, torch.Generator().manual_seed(5), num_steps=3)
    )


def test_shared_encoding_equals_encoding_each_sample_again() -> None:
    """V^π's M chunks per state share one encoding of the state and instruction across the
    samples and every Euler step; encoding the state again for each sample and each step
    (the unshared computation) gives the same chunks to 1e-6."""
    policy = tiny_policy().eval()
    state, task, _, _ = inputs(b=3)
    m, steps = 4, policy.config.num_flow_steps
    got = policy.sample(state, task, m, torch.Generator().manual_seed(2))
    noise = torch.randn((3 * m, H, A), generator=torch.Generator().manual_seed(2))
    rows = state.repeat_interleave(m, 0), task.repeat_interleave(m)
    with torch.no_grad():
        x = noise
        for k in range(steps):
            eta = torch.full((3 * m,), k / steps)
            per_row = [
                policy.velocity(
                    x[i : i + 1],
                    eta[i : i + 1],
                    policy.condition(rows[0][i : i + 1], rows[1][i : i + 1]),
                )
                for i in range(3 * m)
            ]
            x = x - torch.cat(per_row) / steps
    want = x.clamp(-1, 1).view(3, m, H, A)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("layers", [1, 3])
def test_sampling_computes_once_what_no_euler_step_changes(layers: int) -> None:
    """`integrate` (what `sample` runs) folds and caches the parts of the network that no
    Euler step changes; `velocity` run whole at every step (the step-by-step path) gives
    the same chunks to 1e-5, unclipped, with weights away from their initialisation."""
    policy = tiny_policy(num_layers=layers, num_flow_steps=7).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    state, task, _, _ = inputs(b=5)
    noise = torch.randn((5, H, A), generator=g)
    with torch.no_grad():
        cond = policy.condition(state, task)
        want = euler_integrate(lambda x, t: policy.velocity(x, t, cond), noise, 7)
        got = policy.euler(noise, cond, 7)
    assert want.abs().max() > 1.0  # a chunk that clipping would hide
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_flow_loss_per_sample_shape_and_grad() -> None:
    policy = tiny_policy()
    state, task, actions, valid = inputs()
    loss = policy.flow_loss_per_sample(state, task, actions, valid, torch.Generator())
    assert loss.shape == (6,)
    loss.mean().backward()
    assert all(p.grad is not None for p in policy.parameters())


def test_padded_steps_do_not_count(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = tiny_policy()
    state, task, actions, valid = inputs()
    base = policy.velocity

    def blow_up_padding(x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        f = base(x, t, c).clone()
        f[0, 2:] = 1e6  # row 0's steps 2.. are padding
        return f

    ref = policy.flow_loss_per_sample(state, task, actions, valid, torch.Generator())
    monkeypatch.setattr(policy, "velocity", blow_up_padding)
    out = policy.flow_loss_per_sample(state, task, actions, valid, torch.Generator())
    assert torch.equal(out, ref)


def test_state_dict_roundtrip_gives_identical_outputs(tmp_path) -> None:
    safetensors_torch = pytest.importorskip("safetensors.torch")
    policy = tiny_policy(seed=0)
    policy.state_norm = Normalizer.from_stats(torch.arange(S) * 1.0, torch.full((S,), 2.0))
    path = tmp_path / "actor.safetensors"
    safetensors_torch.save_file(policy.state_dict(), str(path))
    loaded = tiny_policy(seed=1)
    loaded.load_state_dict(safetensors_torch.load_file(str(path)))
    state, task, actions, valid = inputs()
    g = torch.Generator()
    assert torch.equal(
        policy.sample(state, task, 2, g.manual_seed(0)),
        loaded.sample(state, task, 2, g.manual_seed(0)),
    )
    assert torch.equal(
        policy.flow_loss_per_sample(state, task, actions, valid, g.manual_seed(0)),
        loaded.flow_loss_per_sample(state, task, actions, valid, g.manual_seed(0)),
    )


def test_same_seed_same_losses() -> None:
    def run() -> list[float]:
        policy = tiny_policy(seed=0)
        opt = torch.optim.AdamW(policy.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(0)
        state, task, actions, valid = inputs()
        losses = []
        for _ in range(3):
            loss = policy.flow_loss_per_sample(state, task, actions, valid, g).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    first = run()
    assert first == run()
    assert first[0] != first[1]


def test_sinusoidal_embedding() -> None:
    e = sinusoidal_embedding(torch.tensor([0.0, 0.5]), 8)
    assert e.shape == (2, 8)
    assert torch.equal(e[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    assert math.isclose(float(e[1].square().sum()), 4.0, rel_tol=1e-5)  # sin² + cos² per pair

"""The chunked critic ensemble: shapes, padding mask, members, save→load."""

from __future__ import annotations

import pytest
import torch

from aloe.critics.chunked_q import ChunkedQCritic, CriticConfig, EnsembleHead
from aloe.nn import Normalizer

S, A, H, T, K = 5, 2, 4, 3, 3


def tiny_critic(seed: int = 0) -> ChunkedQCritic:
    torch.manual_seed(seed)
    cfg = CriticConfig(num_q=K, hidden_dim=16, num_layers=2, num_heads=2)
    cfg.head_hidden_dim = 8
    return ChunkedQCritic(cfg, state_dim=S, action_dim=A, num_tasks=T, horizon=H)


def inputs(b: int = 6) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    state = torch.randn(b, S, generator=g)
    task = torch.randint(0, T, (b,), generator=g)
    actions = torch.rand(b, H, A, generator=g) * 2 - 1
    valid = torch.ones(b, H)
    valid[0, 1:] = 0.0
    valid[3, 3:] = 0.0
    return state, task, actions, valid


@pytest.mark.parametrize("train", [True, False])
def test_shape_is_members_by_batch(train: bool) -> None:
    critic = tiny_critic().train(train)
    state, task, actions, valid = inputs()
    q = critic(state, task, actions, valid)
    assert q.shape == (K, 6)
    assert not torch.allclose(q[0], q[1])  # members differ (own readout token and head)


@pytest.mark.parametrize("train", [True, False])
def test_padded_actions_do_not_change_values(train: bool) -> None:
    critic = tiny_critic().train(train)
    state, task, actions, valid = inputs()
    changed = actions.clone()
    changed[0, 1:] = 7.0
    changed[3, 3] = -9.0
    with torch.no_grad():
        q = critic(state, task, actions, valid)
        q_changed = critic(state, task, changed, valid)
        q_unmasked = critic(state, task, changed)
    assert torch.equal(q, q_changed)
    assert not torch.allclose(q[:, 0], q_unmasked[:, 0])  # without the mask they would
    assert torch.equal(critic(state, task, actions), critic(state, task, actions, torch.ones(6, H)))


def test_gradient_reaches_every_parameter() -> None:
    critic = tiny_critic()
    state, task, actions, valid = inputs()
    critic(state, task, actions, valid).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in critic.parameters())


def test_ensemble_head_members_are_independent() -> None:
    torch.manual_seed(0)
    head = EnsembleHead(num_q=2, dim=3, hidden_dim=4)
    z = torch.randn(5, 2, 3)
    out = head(z)
    ref = torch.nn.functional.gelu(z[:, 1] @ head.w1[1] + head.b1[1]) @ head.w2[1] + head.b2[1]
    assert out.shape == (2, 5)
    assert torch.allclose(out[1], ref, atol=1e-6)
    z2 = z.clone()
    z2[:, 0] += 1.0  # changing member 0's token leaves member 1's value alone
    assert torch.equal(head(z2)[1], out[1])


def test_state_dict_roundtrip_gives_identical_outputs(tmp_path) -> None:
    safetensors_torch = pytest.importorskip("safetensors.torch")
    critic = tiny_critic(seed=0).eval()
    critic.state_norm = Normalizer.from_stats(torch.ones(S), torch.full((S,), 3.0))
    path = tmp_path / "critic.safetensors"
    safetensors_torch.save_file(critic.state_dict(), str(path))
    loaded = tiny_critic(seed=1).eval()
    loaded.load_state_dict(safetensors_torch.load_file(str(path)))
    state, task, actions, valid = inputs()
    assert torch.equal(critic(state, task, actions, valid), loaded(state, task, actions, valid))


def test_normalizer_from_stats() -> None:
    norm = Normalizer.from_stats(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 0.0]))
    x = torch.tensor([[3.0, 5.0]])
    assert torch.equal(norm.normalize(x), torch.tensor([[1.0, 3.0]]))  # std 0 -> only centred
    assert torch.equal(norm.unnormalize(norm.normalize(x)), x)

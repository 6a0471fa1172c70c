"""AWR's distributional value (Appendix C-3) on hand-computed cases, and its learner."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from aloe import checkpoint
from aloe.algos.awr import (
    AwrConfig,
    AwrLearner,
    bin_values,
    project_onto_bins,
    value_critic,
    value_from_logits,
    value_loss,
    value_range,
)
from aloe.algos.optimised import OptimConfig
from aloe.critics.chunked_q import CriticConfig
from aloe.data import ChunkBatch
from aloe.policies.flow import ActorConfig, FlowPolicy

S, A, H = 5, 2, 3


# The two-bin projection: atoms 0, 1, 2, 3, 4 (V_min = 0, V_max = 4, N = 5).


@pytest.mark.parametrize(
    "ret, expected",
    [
        (2.25, [0.0, 0.0, 0.75, 0.25, 0.0]),  # between z_2 and z_3: 0.75 / 0.25
        (3.0, [0.0, 0.0, 0.0, 1.0, 0.0]),  # on an atom: all of it there
        (0.0, [1.0, 0.0, 0.0, 0.0, 0.0]),  # V_min
        (4.0, [0.0, 0.0, 0.0, 0.0, 1.0]),  # V_max
        (-3.0, [1.0, 0.0, 0.0, 0.0, 0.0]),  # below the range: clipped to V_min
        (7.5, [0.0, 0.0, 0.0, 0.0, 1.0]),  # above the range: clipped to V_max
        (0.5, [0.5, 0.5, 0.0, 0.0, 0.0]),
    ],
)
def test_projection_hand_cases(ret: float, expected: list[float]) -> None:
    target = project_onto_bins(torch.tensor([ret]), 0.0, 4.0, 5)
    assert torch.allclose(target, torch.tensor([expected]), atol=1e-6)


def test_projection_on_eq14_range() -> None:
    # V_min = −200, V_max = 0, N = 3: atoms −200, −100, 0; G = −150 sits halfway.
    target = project_onto_bins(torch.tensor([-150.0, -100.0, -250.0]), -200.0, 0.0, 3)
    assert torch.allclose(target, torch.tensor([[0.5, 0.5, 0.0], [0, 1, 0], [1, 0, 0]]))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-300, 50, allow_nan=False), min_size=1, max_size=8))
def test_projection_keeps_the_mean_of_the_clipped_return(returns: list[float]) -> None:
    g = torch.tensor(returns, dtype=torch.float64)
    target = project_onto_bins(g, -200.0, 0.0, 256)
    z = bin_values(-200.0, 0.0, 256).double()
    assert torch.allclose(target.sum(1), torch.ones(len(returns), dtype=torch.float64))
    assert (target >= 0).all() and ((target > 0).sum(1) <= 2).all()
    assert torch.allclose((target * z).sum(1), g.clamp(-200.0, 0.0), atol=1e-9)


def test_value_from_logits_hand_cases() -> None:
    # atoms (−1, 1); softmax(0, ln 3) = (1/4, 3/4) -> V = −1/4 + 3/4 = 1/2
    assert torch.allclose(
        value_from_logits(torch.tensor([[0.0, math.log(3.0)]]), -1.0, 1.0), torch.tensor([0.5])
    )
    # uniform logits over atoms 0..4: the mean atom, 2
    assert torch.allclose(value_from_logits(torch.zeros(2, 5), 0.0, 4.0), torch.tensor([2.0, 2.0]))
    # one dominant logit: that atom
    logits = torch.tensor([[0.0, 0.0, 0.0, 50.0, 0.0]])
    assert torch.allclose(value_from_logits(logits, 0.0, 4.0), torch.tensor([3.0]))


def test_value_loss_is_the_cross_entropy_to_the_projection() -> None:
    logits = torch.tensor([[0.0, math.log(3.0)]], requires_grad=True)
    # G = 0 on atoms (−1, 1): target (1/2, 1/2); CE = −½ log ¼ − ½ log ¾
    loss, metrics = value_loss(logits, torch.tensor([0.0]), -1.0, 1.0)
    expected = -0.5 * math.log(0.25) - 0.5 * math.log(0.75)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert metrics["value/v_mean"] == pytest.approx(0.5)
    loss.backward()
    # d CE / d logits = softmax − target = (¼ − ½, ¾ − ½)
    assert torch.allclose(logits.grad, torch.tensor([[-0.25, 0.25]]))


def test_value_range_from_eq14() -> None:
    assert value_range(AwrConfig(), c_fail=100.0, gamma=0.99) == pytest.approx((-200.0, 0.0))
    assert value_range(AwrConfig(v_min=-50.0, v_max=1.0), 100.0, 0.99) == (-50.0, 1.0)


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="awr.v_min"):
        AwrConfig(v_min=1.0, v_max=0.0).validate()
    with pytest.raises(ValueError, match="awr.num_bins"):
        AwrConfig(num_bins=1).validate()


# The value network and the learner.


def tiny_learner(seed: int = 0) -> AwrLearner:
    torch.manual_seed(seed)
    actor = FlowPolicy(
        ActorConfig(hidden_dim=16, num_layers=1, num_heads=2, num_flow_steps=2), S, A, 1, horizon=H
    )
    critic_cfg = CriticConfig(num_q=4, hidden_dim=16, num_layers=1, num_heads=2, head_hidden_dim=8)
    critic = value_critic(critic_cfg, S, 1, num_bins=11)
    optim = OptimConfig(batch_size=4, warmup_steps=0, seed=seed)
    return AwrLearner(actor, critic, AwrConfig(num_bins=11), (-10.0, 0.0), optim)


def batch(b: int = 4) -> ChunkBatch:
    g = torch.Generator().manual_seed(3)
    return ChunkBatch(
        state=torch.randn(b, S, generator=g),
        actions=torch.rand(b, H, A, generator=g) * 2 - 1,
        valid=torch.ones(b, H),
        reward=torch.zeros(b),
        next_state=torch.randn(b, S, generator=g),
        discount=torch.ones(b),
        bootstrap=torch.ones(b),
        mc_return=torch.tensor([-1.0, -9.0, -4.0, -12.0])[:b],
        task_index=torch.zeros(b, dtype=torch.long),
        source=torch.zeros(b, dtype=torch.long),
        global_index=torch.arange(b),
    )


def test_value_critic_is_state_only_with_one_readout() -> None:
    learner = tiny_learner()
    critic = learner.critic
    assert critic.num_q == 1 and critic.action_in is None and critic.action_pos is None
    b = batch()
    assert critic(b.state, b.task_index).shape == (4, 11)
    assert learner.value(b.state, b.task_index).shape == (4,)


def _params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def test_updates_touch_only_their_own_network() -> None:
    learner = tiny_learner()
    actor0, critic0 = _params(learner.actor_module), _params(learner.critic)
    m = learner.value_step(batch())
    assert all(
        torch.equal(a, b) for a, b in zip(actor0, _params(learner.actor_module), strict=True)
    )
    assert not all(torch.equal(a, b) for a, b in zip(critic0, _params(learner.critic), strict=True))
    assert m["value/loss"] > 0
    critic1 = _params(learner.critic)
    m = learner.actor_step(batch())
    assert all(torch.equal(a, b) for a, b in zip(critic1, _params(learner.critic), strict=True))
    assert m["actor/weight_max"] <= math.exp(3.0) + 1e-4


def test_actor_weights_use_mc_return_minus_value() -> None:
    learner = tiny_learner()
    b = batch()
    with torch.no_grad():
        v = learner.value(b.state, b.task_index)
    m = learner.actor_step(b)
    assert m["actor/advantage_mean"] == pytest.approx(float((b.mc_return - v).mean()), rel=1e-5)
    assert m["actor/v_mean"] == pytest.approx(float(v.mean()), rel=1e-5)


def test_state_dict_roundtrip_through_a_checkpoint(tmp_path) -> None:
    learner = tiny_learner(seed=0)
    learner.value_step(batch())
    checkpoint.save(tmp_path, 1, {"learner": learner.state_dict()})
    loaded = tiny_learner(seed=1)
    loaded.v_min = -1.0
    loaded.load_state_dict(checkpoint.load(tmp_path / "iter-0001")["learner"])
    b = batch()
    assert (loaded.v_min, loaded.v_max) == (-10.0, 0.0)
    assert torch.equal(learner.value(b.state, b.task_index), loaded.value(b.state, b.task_index))
    assert learner.value_step(b) == loaded.value_step(b)  # same generator, same optimiser

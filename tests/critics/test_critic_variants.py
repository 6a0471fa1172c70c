"""The critic variants of `critic.*` (issue 32): each one's contract (shapes, padding,
gradient isolation, save → load), HL-Gauss's target projection and bootstrap masks on hand
cases, the buffer normaliser, and updates per environment step."""

from __future__ import annotations

import io
import math

import pytest
import torch

from aloe.algos.aloe import AloeConfig, AloeLearner, critic_updates
from aloe.algos.aloe_math import bootstrap_mask, critic_loss, hl_gauss_loss
from aloe.critics.chunked_q import CriticConfig, QEnsemble
from aloe.critics.ensemble import MemberStack, MlpQCritic, build_critic, refit_normalizers
from aloe.critics.hl_gauss import HLGauss, support_bounds
from aloe.data import ChunkBatch
from aloe.nn import Normalizer
from aloe.policies.flow import ActorConfig, FlowPolicy

S, A, H, T, K, B = 5, 2, 4, 3, 3, 6
VARIANTS = [
    {"arch": "transformer", "members": "shared", "loss": "mse"},
    {"arch": "transformer", "members": "independent", "loss": "mse"},
    {"arch": "transformer", "members": "shared", "loss": "hl-gauss", "time_features": True},
    {"arch": "mlp", "loss": "mse"},
    {"arch": "mlp", "loss": "hl-gauss", "time_features": True, "z_clip": 2.0},
]
IDS = ["-".join(str(v) for v in variant.values()) for variant in VARIANTS]


def critic_config(**variant: object) -> CriticConfig:
    sizes = {"num_q": K, "hidden_dim": 16, "num_layers": 1, "num_heads": 2, "head_hidden_dim": 8}
    small = {"mlp_hidden_dim": 16, "mlp_num_layers": 2, "num_bins": 21}
    return CriticConfig(**sizes, **small, **variant)  # type: ignore[arg-type]


def critic(seed: int = 0, **variant: object) -> QEnsemble:
    torch.manual_seed(seed)
    return build_critic(
        critic_config(**variant),
        S,
        A,
        T,
        lambda: Normalizer.from_stats(torch.zeros(S), torch.full((S,), 2.0)),
        horizon=H,
        support=(-20.0, 0.0),
    )


def inputs(time: bool = True) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    valid = torch.ones(B, H)
    valid[0, 1:] = 0.0
    return (
        torch.randn(B, S, generator=g),
        torch.randint(0, T, (B,), generator=g),
        torch.rand(B, H, A, generator=g) * 2 - 1,
        valid,
        torch.rand(B, 2, generator=g) if time else None,  # type: ignore[return-value]
    )


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_values_are_members_by_batch_and_padding_is_ignored(variant: dict) -> None:
    q_net = critic(**variant).eval()
    state, task, actions, valid, time = inputs()
    q = q_net(state, task, actions, valid, time)
    assert q.shape == (K, B)
    assert not torch.allclose(q[0], q[1])
    changed = actions.clone()
    changed[0, 1:] = 5.0
    assert torch.equal(q_net(state, task, changed, valid, time), q)
    if variant.get("loss") == "hl-gauss":
        assert q_net.raw(state, task, actions, valid, time).shape == (K, B, 21)
        assert q.min() >= -20.0 and q.max() <= 0.0


def test_the_variants_are_the_classes_they_name() -> None:
    assert isinstance(critic(arch="mlp"), MlpQCritic)
    stack = critic(members="independent")
    assert isinstance(stack, MemberStack) and len(stack.members) == K
    shared = critic()
    assert sum(p.numel() for p in stack.parameters()) > 2 * sum(
        p.numel() for p in shared.parameters()
    )


def test_a_critic_with_time_features_refuses_a_call_without_the_clock() -> None:
    state, task, actions, valid, _ = inputs()
    with pytest.raises(ValueError, match=r"critic.time_features.*\(6, 2\), got None"):
        critic(time_features=True)(state, task, actions, valid)


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_save_load_gives_identical_outputs(variant: dict) -> None:
    q_net = critic(seed=0, **variant).eval()
    buffer = io.BytesIO()
    torch.save(q_net.state_dict(), buffer)
    other = critic(seed=5, **variant).eval()
    buffer.seek(0)
    other.load_state_dict(torch.load(buffer, weights_only=True))
    args = inputs()
    assert torch.equal(other(*args), q_net(*args))


def tiny_learner(**variant: object) -> AloeLearner:
    torch.manual_seed(0)
    actor = FlowPolicy(ActorConfig(hidden_dim=16, num_layers=1, num_heads=2), S, A, T, horizon=H)
    bootstrap = variant.pop("bootstrap", 1.0)
    return AloeLearner(
        actor, critic(bootstrap=bootstrap, **variant), AloeConfig(num_value_samples=2)
    )


def batch(time: bool) -> ChunkBatch:
    state, task, actions, valid, clock = inputs(time)
    return ChunkBatch(
        state=state,
        actions=actions * valid[..., None],
        valid=valid,
        reward=-torch.rand(B),
        next_state=torch.randn(B, S),
        discount=torch.full((B,), 0.99**H),
        bootstrap=torch.ones(B),
        mc_return=torch.zeros(B),
        task_index=task,
        source=torch.zeros(B, dtype=torch.long),
        global_index=torch.arange(B),
        time=clock,
        next_time=None if clock is None else clock + 0.1,
    )


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_gradients_stay_on_their_side(variant: dict) -> None:
    """The actor loss leaves zero gradient on the critic, and the critic loss on the actor."""
    learner = tiny_learner(**variant, bootstrap=0.5)
    b = batch(time=bool(variant.get("time_features")))
    metrics = learner.critic_step(b)
    assert {"critic/q_member_std", "critic/grad_norm"} <= set(metrics)
    assert all(p.grad is None or not p.grad.any() for p in learner.actor_module.parameters())
    learner.critic_opt.optim.zero_grad(set_to_none=True)
    learner.actor_step(b)
    assert all(p.grad is None for p in learner.critic.parameters())
    assert any(p.grad is not None for p in learner.actor_module.parameters())


# HL-Gauss


def test_support_bounds_span_every_return_of_eq_14() -> None:
    assert support_bounds(c_fail=100.0, gamma=0.99) == pytest.approx((-200.0, 0.0))


def test_hl_gauss_target_projection_by_hand() -> None:
    """Edges (−2, −1, 0), σ = 0.5 (one bin width × 0.5), y = −0.5:
    p_0 = (Φ(−1) − Φ(−3)) / (Φ(1) − Φ(−3)) = 0.157305 / 0.839995 = 0.187269,
    p_1 = (Φ(1) − Φ(−1)) / (Φ(1) − Φ(−3)) = 0.682689 / 0.839995 = 0.812731.
    y = −1 (the middle edge) splits evenly; y beyond the support is its edge's."""
    bins = HLGauss(num_bins=2, v_min=-2.0, v_max=0.0, sigma_bins=0.5)
    assert bins.sigma == pytest.approx(0.5)
    p = bins.target_probs(torch.tensor([-0.5, -1.0, -7.0, -2.0]))
    assert p[0].tolist() == pytest.approx([0.187269, 0.812731], abs=1e-6)
    assert p[1].tolist() == pytest.approx([0.5, 0.5])
    assert torch.equal(p[2], p[3])
    assert bins.value(torch.log(torch.tensor([0.25, 0.75]))).item() == pytest.approx(
        0.25 * -1.5 + 0.75 * -0.5
    )


def test_hl_gauss_loss_is_the_cross_entropy_and_its_minimum_is_the_target() -> None:
    bins = HLGauss(num_bins=2, v_min=-2.0, v_max=0.0, sigma_bins=0.5)
    logits = torch.zeros(1, 1, 2, requires_grad=True)  # uniform: −log ½ whatever the target
    loss, metrics = hl_gauss_loss(logits, torch.tensor([-0.5]), bins)
    assert loss.item() == pytest.approx(math.log(2))
    assert metrics["critic/q_mean"] == pytest.approx(-1.0)
    best = bins.target_probs(torch.tensor([-0.5])).log()[None]
    assert hl_gauss_loss(best, torch.tensor([-0.5]), bins)[0].item() < loss.item()


# Member diversity: bootstrap masks


def test_bootstrap_mask_is_none_at_one_and_bernoulli_below() -> None:
    g = torch.Generator().manual_seed(0)
    assert bootstrap_mask(3, 4, 1.0, g) is None
    mask = bootstrap_mask(4, 10_000, 0.5, g)
    assert mask is not None and mask.shape == (4, 10_000)
    assert mask.mean().item() == pytest.approx(0.5, abs=0.02)
    assert not torch.equal(mask[0], mask[1])


def test_masked_critic_loss_by_hand() -> None:
    q = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    y = torch.tensor([1.0, 1.0])  # errors² (0, 1; 4, 9)
    mask = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert critic_loss(q, y, mask)[0].item() == pytest.approx((0 + 4 + 9) / 3)
    assert critic_loss(q, y, torch.ones(2, 2))[0].item() == critic_loss(q, y)[0].item()


def test_bootstrap_one_draws_nothing_so_the_update_is_the_papers() -> None:
    learner, reference = tiny_learner(bootstrap=1.0), tiny_learner()
    b = batch(time=False)
    assert learner.critic_step(b) == reference.critic_step(b)
    assert torch.equal(learner.generator.get_state(), reference.generator.get_state())


# The state normaliser and the number of updates


def test_refit_sets_every_members_normaliser_and_z_is_clipped() -> None:
    stack = critic(members="independent", z_clip=1.5)
    refit_normalizers(stack, torch.full((S,), 1.0), torch.tensor([2.0, 1e-9, 1.0, 1.0, 1.0]))
    for member in stack.stack:
        assert member.state_norm.mean.tolist() == [1.0] * S
        assert member.state_norm.std.tolist() == [2.0, 1.0, 1.0, 1.0, 1.0]  # tiny std: centred
    mlp = critic(arch="mlp", z_clip=1.5).eval()
    state, task, actions, valid, _ = inputs()
    far = state.clone()
    far[:, 0] = 100.0
    farther = state.clone()
    farther[:, 0] = 1e4
    assert torch.equal(mlp(far, task, actions, valid), mlp(farther, task, actions, valid))


def test_critic_updates_per_environment_step() -> None:
    assert critic_updates(AloeConfig(critic_steps=20), env_steps=333) == 20
    assert critic_updates(AloeConfig(critic_updates_per_step=0.5), env_steps=333) == 166
    assert critic_updates(AloeConfig(critic_updates_per_step=1.0), env_steps=333) == 333


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("arch", "cnn", r"critic.arch \('cnn'\): must be transformer or mlp"),
        ("members", "some", r"critic.members \('some'\): must be shared or independent"),
        ("loss", "huber", r"critic.loss \('huber'\): must be mse or hl-gauss"),
        ("bootstrap", 0.0, r"critic.bootstrap \(0.0\): must be in \(0, 1\]"),
        ("normalizer", "all", r"critic.normalizer \('all'\): must be demo or buffer"),
        ("z_clip", 0.0, r"critic.z_clip \(0.0\): must be > 0 \(inf: no clipping\)"),
        ("num_bins", 1, r"critic.num_bins \(1\): must be >= 2"),
    ],
)
def test_config_names_the_bad_field(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CriticConfig(**{field: value}).validate()  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"aloe.critic_updates_per_step \(-1.0\)"):
        AloeConfig(critic_updates_per_step=-1.0).validate()

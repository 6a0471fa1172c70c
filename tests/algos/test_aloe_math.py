"""ALOE's equations on hand-computed cases, and the learner's contracts."""

from __future__ import annotations

import dataclasses
import io
import json
import math

import numpy as np
import pytest
import torch

from aloe import data as D
from aloe.algos.aloe import AloeConfig, AloeLearner
from aloe.algos.aloe_math import (
    advantage_weights,
    critic_loss,
    estimate_value,
    polyak_update,
    q_pess,
    reduce_target,
    td_target,
    weighted_flow_loss,
)
from aloe.algos.bc import bc_loss
from aloe.algos.optimised import OptimConfig, check_finite, warmup_cosine
from aloe.critics.chunked_q import ChunkedQCritic, CriticConfig
from aloe.data import ChunkBatch
from aloe.policies.flow import ActorConfig, FlowPolicy, flow_matching_loss

S, A, H, T = 5, 2, 3, 2
GAMMA = 0.99


def chunk_batch(b: int = 2, seed: int = 0, **fields: torch.Tensor) -> ChunkBatch:
    g = torch.Generator().manual_seed(seed)
    valid = torch.ones(b, H)
    valid[0, 2:] = 0.0
    base = dict(
        state=torch.randn(b, S, generator=g),
        actions=(torch.rand(b, H, A, generator=g) * 2 - 1) * valid[..., None],
        valid=valid,
        reward=-torch.rand(b, generator=g) * 3,
        next_state=torch.randn(b, S, generator=g),
        discount=torch.full((b,), GAMMA**H),
        bootstrap=torch.ones(b),
        mc_return=torch.zeros(b),
        task_index=torch.randint(0, T, (b,), generator=g),
        source=torch.zeros(b, dtype=torch.long),
        global_index=torch.arange(b),
    )
    base.update(fields)
    return ChunkBatch(**base)


# Eq. 7


def test_td_target_termination_inside_chunk_does_not_bootstrap() -> None:
    # n = 2 valid steps, r = (−1, −C_fail = −100) and the episode terminates (failure).
    batch = chunk_batch(
        b=1,
        reward=torch.tensor([-1.0 + GAMMA * -100.0]),
        discount=torch.tensor([GAMMA**2]),
        bootstrap=torch.tensor([0.0]),
    )
    y = td_target(batch, torch.tensor([-50.0]))
    assert y.item() == pytest.approx(-100.0)


def test_td_target_truncation_bootstraps_with_gamma_n() -> None:
    # n = 3 steps of −1, cut by a time limit: y = −(1 + γ + γ²) + γ³ Q'
    batch = chunk_batch(
        b=1,
        reward=torch.tensor([-(1 + GAMMA + GAMMA**2)]),
        discount=torch.tensor([GAMMA**3]),
        bootstrap=torch.tensor([1.0]),
    )
    y = td_target(batch, torch.tensor([-50.0]))
    assert y.item() == pytest.approx(-2.9701 + 0.970299 * -50.0)


def test_target_reduce_modes_and_member_targets() -> None:
    next_q = torch.tensor([[-10.0, -2.0], [-4.0, -8.0]])
    assert torch.equal(reduce_target(next_q, "min"), torch.tensor([-10.0, -8.0]))
    assert torch.equal(reduce_target(next_q, "mean"), torch.tensor([-7.0, -5.0]))
    assert torch.equal(reduce_target(next_q, "member"), next_q)
    with pytest.raises(ValueError, match="target_reduce"):
        reduce_target(next_q, "max")  # type: ignore[arg-type]
    batch = chunk_batch(reward=torch.tensor([-1.0, -2.0]), discount=torch.tensor([0.5, 0.5]))
    y = td_target(batch, next_q)
    assert torch.equal(y, torch.tensor([[-6.0, -3.0], [-3.0, -6.0]]))  # each member its own


# Eq. 8 and 9


def test_critic_loss_by_hand() -> None:
    q = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    loss, metrics = critic_loss(q, torch.tensor([1.0, 1.0]))
    assert loss.item() == pytest.approx((0 + 1 + 4 + 9) / 4)
    assert metrics["critic/loss"] == pytest.approx(3.5)
    assert metrics["critic/q_min"] == 1.0 and metrics["critic/q_max"] == 4.0
    loss.backward()
    assert q.grad is not None
    assert torch.allclose(q.grad, torch.tensor([[0.0, 0.5], [1.0, 1.5]]))  # 2(Q − y)/(K·B)
    y = torch.tensor([[1.0, 2.0], [3.0, 3.0]])  # per-member targets
    assert critic_loss(q, y)[0].item() == pytest.approx(0.25)


def test_q_pess_is_min_over_members() -> None:
    q = torch.tensor([[-1.0, -5.0, 2.0], [-3.0, -4.0, 1.0]])
    assert torch.equal(q_pess(q), torch.tensor([-3.0, -5.0, 1.0]))


# Eq. 10–11


def test_advantage_weights_hit_both_clip_bounds() -> None:
    q = torch.tensor([-120.0, -20.0, -18.0, 80.0])
    v = torch.full((4,), -20.0, requires_grad=True)
    w, metrics = advantage_weights(q, v, beta=5.0, eps_clip=3.0)
    # A = (−100, 0, 2, 100); A/β = (−20, 0, 0.4, 20) -> clip (−3, 0, 0.4, 3)
    expected = torch.tensor([math.exp(-3), 1.0, math.exp(0.4), math.exp(3)])
    assert torch.allclose(w, expected)
    assert not w.requires_grad  # sg(V): no gradient through the baseline
    assert metrics["actor/clip_frac"] == 0.5
    assert metrics["actor/advantage_mean"] == pytest.approx(0.5)
    assert metrics["actor/weight_max"] == pytest.approx(math.exp(3))


def test_advantage_normalization() -> None:
    q, v = torch.tensor([2.0, -2.0]), torch.zeros(2)  # A = (2, −2), std 2
    w, _ = advantage_weights(q, v, beta=1.0, eps_clip=10.0, normalize=True)
    assert torch.allclose(w, torch.tensor([math.e, 1 / math.e]), rtol=1e-5)


def test_estimate_value_averages_q_pess_over_samples() -> None:
    class StubPolicy:
        horizon, action_dim = 1, 1

        def flow_loss_per_sample(self, *args: object, **kw: object) -> torch.Tensor:
            raise NotImplementedError

        def sample(
            self, state, task_index, num_samples=1, generator=None, num_steps=None, images=None
        ):
            # sample j of row b is the chunk [[b + j]]
            b = torch.arange(state.shape[0])[:, None] + torch.arange(num_samples)[None]
            return b[..., None, None].float()

    def stub_critic(state, task_index, actions):  # K = 2 members: a and 2a
        a = actions[:, 0, 0]
        return torch.stack([a, 2 * a])

    v = estimate_value(stub_critic, StubPolicy(), torch.zeros(2, 1), torch.zeros(2), 3)
    # row 0: samples 0, 1, 2 -> Q_pess = (0, 1, 2) -> 1 ; row 1: (1, 2, 3) -> 2
    assert torch.equal(v, torch.tensor([1.0, 2.0]))

    def masked_critic(state, task_index, actions, valid):  # Q = −(executed steps) · a
        return torch.stack([-valid.sum(1) * actions[:, 0, 0]] * 2)

    valid = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])  # row 0's data chunk: 2 of 3 steps
    v = estimate_value(
        masked_critic, StubPolicy(), torch.zeros(2, 1), torch.zeros(2), 3, valid=valid
    )
    # π's chunks scored over the data chunk's steps: row 0 −2·(0, 1, 2) -> −2, row 1 −3·2 -> −6
    assert torch.equal(v, torch.tensor([-2.0, -6.0]))


def test_both_samplings_use_the_actors_own_flow_steps() -> None:
    """a' of Eq. 7 and V^π's chunks of Eq. 10 are π as it acts: no step count reaches
    `sample`, so it uses actor.num_flow_steps (tests/policies/test_flow_sampler.py)."""
    learner = tiny_learner()
    seen: list[object] = []
    sample = learner.actor.sample

    def spy(*args: object, **kwargs: object) -> torch.Tensor:
        seen.append(args[4] if len(args) > 4 else kwargs.get("num_steps"))
        return sample(*args, **kwargs)  # type: ignore[arg-type]

    learner.actor.sample = spy  # type: ignore[method-assign]
    batch = chunk_batch(b=4)
    learner.critic_step(batch)
    learner.actor_step(batch)
    assert seen == [None, None]


def test_removed_value_flow_steps_loads_with_a_notice(capsys: pytest.CaptureFixture[str]) -> None:
    """A config.json of an earlier run that has aloe.value_flow_steps still loads; a value
    other than 0 (the exact sampler) is dropped with a one-line notice."""
    from aloe.config import TrainConfig, preset

    text = preset("smoke").resolved().to_json()
    data = json.loads(text)
    data["aloe"]["value_flow_steps"] = 0
    assert TrainConfig.from_json(json.dumps(data)) == TrainConfig.from_json(text)
    assert capsys.readouterr().err == ""
    data["aloe"]["value_flow_steps"] = 2
    TrainConfig.from_json(json.dumps(data))
    assert capsys.readouterr().err == (
        "notice: config field aloe.value_flow_steps (2) was removed; ignored\n"
    )


# Eq. 15–16


def test_weighted_flow_loss_with_hand_computed_velocity() -> None:
    a = torch.tensor([[[1.0]], [[2.0]]])
    eps = torch.tensor([[[0.0]], [[1.0]]])
    per_sample = flow_matching_loss(
        lambda x, t: torch.zeros_like(x), a, torch.ones(2, 1), eps, torch.tensor([0.3, 0.7])
    )
    assert torch.equal(per_sample, torch.tensor([1.0, 1.0]))  # ||ε − a − 0||²
    per_sample = flow_matching_loss(
        lambda x, t: x, a, torch.ones(2, 1), eps, torch.tensor([0.5, 0.5])
    )
    # f = ã = (a + ε)/2: ε − a − ã = (−1.5, −2.5) -> (2.25, 6.25)
    assert torch.equal(per_sample, torch.tensor([2.25, 6.25]))
    loss, metrics = weighted_flow_loss(per_sample, torch.tensor([2.0, 0.5]))
    assert loss.item() == pytest.approx((2 * 2.25 + 0.5 * 6.25) / 2)
    assert metrics["actor/flow_loss"] == pytest.approx(4.25)


def test_bc_loss() -> None:
    per_sample = torch.tensor([1.0, 3.0, 8.0])
    assert bc_loss(per_sample)[0].item() == pytest.approx(4.0)
    assert bc_loss(per_sample, torch.tensor([1, 1, 0]))[0].item() == pytest.approx(2.0)
    assert bc_loss(per_sample, torch.zeros(3))[0].item() == 0.0


# Alg. 1 line 8, guards, schedule


def test_polyak_update_on_one_parameter() -> None:
    online, target = torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        online.weight.fill_(4.0)
        target.weight.fill_(2.0)
    polyak_update(target, online, omega=0.25)
    assert target.weight.item() == 2.5  # 0.25·4 + 0.75·2
    polyak_update(target, online, omega=0.005)
    assert target.weight.item() == pytest.approx(0.005 * 4 + 0.995 * 2.5)
    assert online.weight.item() == 4.0


def test_check_finite_names_the_metric() -> None:
    check_finite({"critic/loss": 1.0, "critic/q_mean": -300.0}, q_abs_max=1e3)
    with pytest.raises(FloatingPointError, match="critic/loss"):
        check_finite({"critic/q_mean": 0.0, "critic/loss": float("nan")})
    with pytest.raises(FloatingPointError, match="actor/weight_max"):
        check_finite({"actor/weight_max": float("inf")})
    with pytest.raises(FloatingPointError, match="critic/q_min.*q_abs_max"):
        check_finite({"critic/q_min": -2e3, "critic/grad_norm": 5e3}, q_abs_max=1e3)
    check_finite({"critic/grad_norm": 5e3}, q_abs_max=1e3)  # not a value metric


def test_config_validate_names_the_field() -> None:
    AloeConfig().validate()
    with pytest.raises(ValueError, match="aloe.beta"):
        AloeConfig(beta=0.0).validate()
    with pytest.raises(ValueError, match="aloe.target_reduce"):
        AloeConfig(target_reduce="max").validate()  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"aloe.value_steps \('some'\): must be full or data"):
        AloeConfig(value_steps="some").validate()  # type: ignore[arg-type]


def test_warmup_cosine_schedule() -> None:
    f = warmup_cosine(warmup_steps=4, decay_steps=14, min_ratio=0.1)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == 1.0
    assert f(9) == pytest.approx(0.55)  # half-way down the cosine
    assert f(14) == pytest.approx(0.1) and f(100) == pytest.approx(0.1)


# The learner


def tiny_learner(seed: int = 0, **overrides: object) -> AloeLearner:
    torch.manual_seed(seed)
    actor = FlowPolicy(
        ActorConfig(hidden_dim=16, num_layers=1, num_heads=2, num_flow_steps=2),
        S,
        A,
        T,
        horizon=H,
    )
    critic = ChunkedQCritic(
        CriticConfig(num_q=2, hidden_dim=16, num_layers=1, num_heads=2), S, A, T, horizon=H
    )
    shared = {f.name for f in dataclasses.fields(OptimConfig)}
    mine = {k: v for k, v in overrides.items() if k not in shared}
    optim = OptimConfig(warmup_steps=2, **{k: v for k, v in overrides.items() if k in shared})  # type: ignore[arg-type]
    cfg = AloeConfig(num_value_samples=2, **mine)  # type: ignore[arg-type]
    return AloeLearner(actor, critic, cfg, optim)


def run_steps(learner: AloeLearner, start: int, n: int) -> list[float]:
    losses = []
    for i in range(start, start + n):
        batch = chunk_batch(b=4, seed=i)
        losses.append(learner.critic_step(batch)["critic/loss"])
        losses.append(learner.actor_step(batch)["actor/loss"])
        losses.append(learner.bc_step(batch)["bc/loss"])
    return losses


def test_learner_steps_report_prefixed_metrics() -> None:
    learner = tiny_learner()
    batch = chunk_batch(b=4)
    critic_metrics = learner.critic_step(batch)
    actor_metrics = learner.actor_step(batch)
    assert {"critic/loss", "critic/q_mean", "critic/grad_norm", "critic/lr"} <= set(critic_metrics)
    assert {"actor/loss", "actor/weight_max", "actor/clip_frac", "actor/v_mean"} <= set(
        actor_metrics
    )
    assert all(isinstance(v, float) for v in (critic_metrics | actor_metrics).values())


@pytest.mark.parametrize("mode", ["min", "mean", "member"])
def test_target_follows_polyak_and_modes_run(mode: str) -> None:
    learner = tiny_learner(target_reduce=mode, polyak=0.5)
    before = [p.clone() for p in learner.target_critic.parameters()]
    learner.critic_step(chunk_batch(b=4))
    for p_target, p_old, p in zip(
        learner.target_critic.parameters(), before, learner.critic.parameters(), strict=True
    ):
        assert torch.allclose(p_target, 0.5 * p + 0.5 * p_old)
        assert not p_target.requires_grad


def test_actor_step_leaves_critic_without_gradient() -> None:
    learner = tiny_learner()
    learner.actor_step(chunk_batch(b=4))
    assert all(p.grad is None or not p.grad.any() for p in learner.critic.parameters())
    assert any(p.grad is not None for p in learner.actor_module.parameters())


def test_critic_step_leaves_actor_without_gradient() -> None:
    learner = tiny_learner()
    learner.critic_step(chunk_batch(b=4))
    assert all(p.grad is None or not p.grad.any() for p in learner.actor_module.parameters())
    assert any(p.grad is not None for p in learner.critic.parameters())


def test_guard_raises_before_the_weights_change() -> None:
    learner = tiny_learner(q_abs_max=1e-9)
    before = [p.clone() for p in learner.critic.parameters()]
    with pytest.raises(FloatingPointError, match="q_abs_max"):
        learner.critic_step(chunk_batch(b=4))
    assert all(torch.equal(a, b) for a, b in zip(before, learner.critic.parameters(), strict=True))


def test_same_seed_same_losses() -> None:
    first = run_steps(tiny_learner(seed=0), 0, 3)
    assert first == run_steps(tiny_learner(seed=0), 0, 3)
    assert first != run_steps(tiny_learner(seed=1), 0, 3)


def test_resume_continues_bit_identically() -> None:
    learner = tiny_learner(seed=0)
    run_steps(learner, 0, 3)
    buffer = io.BytesIO()
    torch.save(learner.state_dict(), buffer)
    expected = run_steps(learner, 3, 3)
    resumed = tiny_learner(seed=7)
    buffer.seek(0)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert run_steps(resumed, 3, 3) == expected


@pytest.mark.gpu
def test_learner_runs_on_cuda() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    torch.manual_seed(0)
    actor = FlowPolicy(ActorConfig(hidden_dim=16, num_layers=1, num_heads=2), S, A, T, horizon=H)
    critic = ChunkedQCritic(CriticConfig(hidden_dim=16, num_layers=1), S, A, T, horizon=H)
    learner = AloeLearner(actor, critic, AloeConfig(num_value_samples=2), device="cuda")
    batch = chunk_batch(b=4)  # on CPU: the learner moves it
    metrics = learner.critic_step(batch) | learner.actor_step(batch) | learner.bc_step(batch)
    assert all(math.isfinite(v) for v in metrics.values())
    state = learner.state_dict()
    learner.load_state_dict(state)


def test_weights_by_source_shares_add_up_per_source() -> None:
    """The diagnostic splits the learner's own weights by the rows' source."""
    import types

    from aloe.evaluation.weights import weights_by_source

    with pytest.raises(ValueError, match="does not weight"):
        weights_by_source(types.SimpleNamespace(config=types.SimpleNamespace(algo="dagger")))


def test_fragment_failure_marks_the_chunks_that_reach_a_labelled_failure() -> None:
    """Episode 0: a policy fragment of 5 steps cut by a failure, then a human fragment that
    succeeds; episode 1: a policy fragment of 3 steps that succeeds. Horizon 2."""
    from aloe.evaluation.weights import fragment_failure

    frames = {
        D.EPISODE: np.array([0, 0, 0, 0, 0, 0, 0, 1, 1, 1]),
        D.FRAGMENT: np.array([0, 0, 0, 0, 0, 1, 1, 0, 0, 0]),
        D.DONE: np.array([0, 0, 0, 0, 1, 0, 1, 0, 0, 1], dtype=bool),
        D.SUCCESS: np.array([0, 0, 0, 0, 0, 0, 1, 0, 0, 1], dtype=bool),
    }
    reaches, failed = fragment_failure(frames, np.arange(10), horizon=2)
    assert failed.tolist() == [True] * 5 + [False] * 5
    assert reaches.tolist() == [False, False, False, True, True] + [False] * 5


def test_q_pess_reads_tensors_and_numpy_arrays_alike() -> None:
    """Eq. 9 is one function: training's tensors and evaluation's arrays (Q traces, OPE)
    give the same minimum over members, each in its own type."""
    q = np.random.default_rng(0).standard_normal((4, 3, 5))
    from_array = q_pess(q)
    assert isinstance(from_array, np.ndarray) and from_array.dtype == q.dtype
    np.testing.assert_array_equal(from_array, q.min(axis=0))
    np.testing.assert_array_equal(q_pess(torch.from_numpy(q)).numpy(), from_array)

"""ALOE's options beyond the paper: best-of-N chunk selection, the confidence-gated
advantage and the OPE-gated acceptance of an actor update, on hand-built critics."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from aloe import data as D
from aloe.algos import aloe
from aloe.algos.aloe import AloeConfig, AloeLearner
from aloe.algos.aloe_math import best_of_n_index, clipped_weights, confidence_bound, sample_best
from aloe.algos.best_of_n import BestOfNPolicy, acting_policy, check_run, served_choice
from aloe.algos.context import UpdateContext
from aloe.config import preset
from aloe.critics.chunked_q import ChunkedQCritic, CriticConfig
from aloe.data import ChunkBatch
from aloe.errors import UsageError
from aloe.nn import evaluating
from aloe.policies.chunk_policy import FlowChunkPolicy
from aloe.policies.flow import ActorConfig, FlowPolicy

S, A, H = 5, 2, 3


def flow_actor(seed: int = 0) -> FlowPolicy:
    torch.manual_seed(seed)
    cfg = ActorConfig(hidden_dim=16, num_layers=1, num_heads=2, num_flow_steps=2)
    return FlowPolicy(cfg, S, A, 1, horizon=H)


class SumCritic(nn.Module):
    """Two members that value a chunk by the sum of its actions (member 1 adds `spread`
    times the first action); records the clocks it is given."""

    def __init__(self, spread: float = 0.0) -> None:
        super().__init__()
        self.spread = spread
        self.clocks: list[Tensor | None] = []

    def forward(
        self,
        state: Tensor,
        task_index: Tensor,
        actions: Tensor,
        valid: Tensor | None = None,
        time: Tensor | None = None,
    ) -> Tensor:
        self.clocks.append(time)
        total = actions.sum(dim=(1, 2))
        return torch.stack([total, total + self.spread * actions[:, 0, 0]])


def synthetic_batch(b: int, seed: int = 0) -> ChunkBatch:
    g = torch.Generator().manual_seed(seed)
    zeros = torch.zeros(b, dtype=torch.long)
    return ChunkBatch(
        state=torch.randn(b, S, generator=g),
        actions=torch.rand(b, H, A, generator=g) * 2 - 1,
        valid=torch.ones(b, H),
        reward=torch.full((b,), -float(H)),
        next_state=torch.randn(b, S, generator=g),
        discount=torch.full((b,), 0.99**H),
        bootstrap=torch.ones(b),
        mc_return=torch.zeros(b),
        task_index=zeros,
        source=zeros,
        global_index=torch.arange(b),
    )


# Best of N


def test_best_of_n_index_takes_the_argmax_of_q_pess_or_the_mean() -> None:
    q = torch.tensor(  # (K=2, B=2, N=3)
        [
            [[0.0, 5.0, 1.0], [3.0, 2.0, 1.0]],
            [[9.0, -1.0, 2.0], [3.0, 2.0, 1.0]],
        ]
    )
    assert best_of_n_index(q, "min").tolist() == [2, 0]  # min over members: [0, -1, 1]
    assert best_of_n_index(q, "mean").tolist() == [0, 0]  # mean: [4.5, 2, 1.5]
    with pytest.raises(ValueError, match="best_of_n_reduce"):
        best_of_n_index(q, "max")  # type: ignore[arg-type]


def test_sample_best_returns_the_chunk_the_critic_values_highest() -> None:
    actor = flow_actor()
    state, task = torch.randn(4, S), torch.zeros(4, dtype=torch.long)
    g = torch.Generator().manual_seed(3)
    drawn = actor.sample(state, task, 6, g)  # the same draw as sample_best's
    best = sample_best(SumCritic(), actor, state, task, 6, "min", torch.Generator().manual_seed(3))
    expected = drawn[torch.arange(4), drawn.sum(dim=(2, 3)).argmax(dim=1)]
    assert torch.equal(best, expected)


def test_best_of_one_is_plain_sampling() -> None:
    actor = flow_actor()
    state, task = torch.randn(3, S), torch.zeros(3, dtype=torch.long)
    critic = SumCritic()
    one = sample_best(critic, actor, state, task, 1, "min", torch.Generator().manual_seed(5))
    plain = actor.sample(state, task, 1, torch.Generator().manual_seed(5))[:, 0]
    assert torch.equal(one, plain) and not critic.clocks  # the critic is not even asked
    chunks = FlowChunkPolicy(actor, version=0, exec_horizon=2, seed=1, device=torch.device("cpu"))
    wrapped = BestOfNPolicy(
        FlowChunkPolicy(actor, version=0, exec_horizon=2, seed=1, device=torch.device("cpu")),
        critic,
        1,
    )
    obs = {"state": np.ones(S, np.float32)}
    for policy in (chunks, wrapped):
        policy.reset(7)
    for _ in range(3):
        assert np.array_equal(wrapped.act_chunk(obs), chunks.act_chunk(obs))


def policies(n: int, critic: nn.Module, clock: int | None = None) -> BestOfNPolicy:
    plain = FlowChunkPolicy(
        flow_actor(), version=2, exec_horizon=2, seed=1, device=torch.device("cpu")
    )
    return BestOfNPolicy(plain, critic, n, "min", clock)


def test_a_batch_of_episodes_picks_as_one_episode_at_a_time() -> None:
    critic = SumCritic(spread=1.0)
    policy = policies(4, critic)
    obs = [{"state": np.full(S, v, np.float32)} for v in (0.0, 1.0)]
    singles = []
    for o, seed in zip(obs, (3, 4), strict=True):
        policy.reset(seed)
        singles.append([policy.act_chunk(o) for _ in range(2)])
    rngs = [policy.episode_rng(3), policy.episode_rng(4)]
    batched = [policy.act_chunks(obs, rngs) for _ in range(2)]
    for t in range(2):
        for i in range(2):
            np.testing.assert_allclose(batched[t][i], singles[i][t], atol=1e-6)
    assert policy.version == 2 and policy.exec_horizon == 2


def test_the_wrapper_keeps_the_episode_clock_of_a_critic_that_reads_it() -> None:
    critic = SumCritic()
    policy = policies(3, critic, clock=100)
    policy.reset(0)
    obs = {"state": np.zeros(S, np.float32)}
    for _ in range(3):
        policy.act_chunk(obs)
    episode = {  # the stored columns of the episode's six policy steps
        D.EPISODE: np.zeros(6, int),
        D.FRAGMENT: np.zeros(6, int),
        D.SOURCE: np.array(["policy"] * 6, dtype=object),
    }
    stored = D.episode_clock(episode, 100)[[0, 2, 4]]  # at each chunk's first step
    seen = [c for c in critic.clocks if c is not None]
    assert len(seen) == 3 and all(c.shape == (3, 2) for c in seen)  # one row per sample
    assert np.array_equal(np.stack([c[0].numpy() for c in seen]), stored)
    policy.reset(1)
    policy.act_chunk(obs)
    assert critic.clocks[-1] is not None and critic.clocks[-1].sum() == 0  # a new episode


def run_config(**aloe_fields: Any) -> Any:
    cfg = preset("smoke")
    cfg.aloe = dataclasses.replace(cfg.aloe, **aloe_fields)
    return cfg


def test_the_run_acts_best_of_n_only_where_asked() -> None:
    plain = FlowChunkPolicy(
        flow_actor(), version=0, exec_horizon=2, seed=0, device=torch.device("cpu")
    )
    assert acting_policy(plain, SumCritic(), run_config(), None) is plain
    picked = acting_policy(plain, SumCritic(), run_config(best_of_n=4, best_of_n_reduce="mean"), 9)
    assert isinstance(picked, BestOfNPolicy) and (picked.n, picked.reduce) == (4, "mean")
    other = run_config(best_of_n=4)
    other.algo = "awr"
    assert acting_policy(plain, SumCritic(), other, None) is plain  # only ALOE's row picks


def test_best_of_n_refuses_what_it_cannot_do() -> None:
    check_run(run_config(best_of_n=4))
    with pytest.raises(UsageError, match=r"aloe.best_of_n \(4\): .*--workers 2"):
        check_run(run_config(best_of_n=4), workers=2)
    cfg = run_config(best_of_n=4)
    cfg.critic = dataclasses.replace(cfg.critic, time_features=True)
    check_run(cfg)  # the operator completes the task: the clock is the wrapper's count
    cfg.collect = dataclasses.replace(cfg.collect, handback_steps=5)
    with pytest.raises(UsageError, match="aloe.best_of_n .*hand-back"):
        check_run(cfg)
    assert served_choice(run_config()) == (1, "min")
    assert served_choice(run_config(best_of_n=3, best_of_n_reduce="mean")) == (3, "mean")
    assert served_choice(run_config(best_of_n=3), 1) == (1, "min")
    with pytest.raises(UsageError, match=r"--best-of-n \(2\): .*episode clock"):
        served_choice(cfg, 2)
    awr = run_config()
    awr.algo = "awr"
    with pytest.raises(UsageError, match=r"--best-of-n \(2\): needs an ALOE run"):
        served_choice(awr, 2)


# The confidence-gated advantage


def test_the_gate_turns_a_disagreeing_ensembles_weight_to_one() -> None:
    agree = torch.tensor([[10.0, -10.0], [10.0, -10.0]])  # (K, B): both members say the same
    disagree = torch.tensor([[40.0, 2.0], [-20.0, -30.0]])  # mean 10 ± 30, -14 ± 16
    assert confidence_bound(agree, 1.0).tolist() == [10.0, -10.0]
    assert confidence_bound(disagree, 1.0).tolist() == [0.0, 0.0]
    assert confidence_bound(disagree, 0.5).tolist() == pytest.approx([0.0, -6.0])
    w, _ = clipped_weights(confidence_bound(disagree, 1.0), beta=5.0, eps_clip=3.0)
    assert w.tolist() == [1.0, 1.0]  # plain BC
    ungated, _ = clipped_weights(disagree.mean(dim=0), beta=5.0, eps_clip=3.0)
    assert ungated.tolist() == pytest.approx([np.exp(2.0), np.exp(-2.8)])


def tiny_learner(**fields: Any) -> AloeLearner:
    torch.manual_seed(0)
    critic = ChunkedQCritic(
        CriticConfig(num_q=2, hidden_dim=16, num_layers=1, num_heads=2), S, A, 1, horizon=H
    )
    return AloeLearner(flow_actor(), critic, AloeConfig(num_value_samples=3, **fields))


def test_the_lcb_learner_weighs_by_the_gated_advantage() -> None:
    batch = synthetic_batch(8, seed=0)
    learner = tiny_learner(advantage="lcb", lcb_kappa=1e6)  # nothing is vouched for
    w, metrics = learner.actor_weights(batch)
    assert torch.equal(w, torch.ones(8)) and metrics["actor/gated_frac"] == 1.0
    learner = tiny_learner(advantage="lcb", lcb_kappa=0.0)  # the members' mean advantage
    w, metrics = learner.actor_weights(batch)
    assert not torch.equal(w, torch.ones(8)) and "actor/advantage_member_std" in metrics
    assert learner.actor_step(batch)["actor/loss"] > 0


def test_best_of_n_target_picks_a_prime_with_the_online_critic() -> None:
    batch = synthetic_batch(4, seed=1)
    plain = tiny_learner()
    assert torch.equal(  # off: one chunk of π, as the paper
        plain.next_chunk(batch),
        plain.actor.sample(batch.next_state, batch.task_index, 1, torch.Generator().manual_seed(0))[
            :, 0
        ],
    )
    picked = tiny_learner(best_of_n=5, best_of_n_target=True)
    picked.generator.manual_seed(9)
    a_best = picked.next_chunk(batch)
    drawn = picked.actor.sample(
        batch.next_state, batch.task_index, 5, torch.Generator().manual_seed(9)
    )
    with torch.no_grad(), evaluating(picked.critic):
        q = picked.critic(
            batch.next_state.repeat_interleave(5, 0),
            batch.task_index.repeat_interleave(5, 0),
            drawn.flatten(0, 1),
        )
    best = q.min(dim=0).values.view(4, 5).argmax(dim=1)  # Q_pess of the online critic
    assert torch.equal(a_best, drawn[torch.arange(4), best])
    assert picked.critic_step(batch)["critic/loss"] > 0


# OPE-gated acceptance


class PositiveCritic(SumCritic):
    """Members that prefer chunks of large actions (Q = sum of the actions)."""

    config = CriticConfig()  # its state normaliser: the demonstrations' (none here)


def context(learner: AloeLearner, **fields: Any) -> UpdateContext[AloeConfig]:
    cfg = preset("smoke")
    cfg.progress = False
    settings = dataclasses.replace(
        cfg.aloe, critic_steps=1, actor_steps=2, num_value_samples=2, accept_states=16, **fields
    )

    class Fixed:
        def sample(self, n: int) -> Any:
            return synthetic_batch(n, seed=n)

    return UpdateContext(cfg, settings, 1, None, learner, lambda frames: Fixed())  # type: ignore[arg-type]


def acceptance_learner(worse: bool) -> tuple[AloeLearner, dict[str, Tensor]]:
    learner = tiny_learner()
    learner.critic = PositiveCritic()  # type: ignore[assignment]
    metric_keys = [*aloe.CRITIC_METRICS.values(), *aloe.ACTOR_METRICS.values()]

    def critic_step(batch: Any) -> dict[str, float]:
        return dict.fromkeys(metric_keys, 0.0)

    def actor_step(batch: Any) -> dict[str, float]:
        """A constructed update: every action driven to -1 (the critic's worst chunk), or
        left as it is."""
        learner.actor_opt.optim.step()  # no gradients: the weights stay
        learner.actor_opt.sched.step()
        if worse:
            learner.actor_module.action_norm.mean.fill_(-10.0)  # type: ignore[union-attr]
        return dict.fromkeys(metric_keys, 0.0)

    learner.critic_step = critic_step  # type: ignore[method-assign]
    learner.actor_step = actor_step  # type: ignore[method-assign]
    before = {k: v.clone() for k, v in learner.actor_module.state_dict().items()}
    return learner, before


def test_acceptance_keeps_the_previous_actor_after_a_worse_update_and_logs_it() -> None:
    learner, before = acceptance_learner(worse=True)
    row = aloe.update(context(learner, accept_margin=0.5))
    assert row["actor_accepted"] == 0.0
    assert row["accept_v_after"] == pytest.approx(-H * A)  # every action at -1
    assert row["accept_v_before"] > row["accept_v_after"] + 0.5
    after = learner.actor_module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert learner.actor_opt.sched.last_epoch == 0  # the optimiser's schedule restored too


def test_acceptance_keeps_an_update_within_the_margin_and_is_off_by_default() -> None:
    learner, _ = acceptance_learner(worse=False)
    row = aloe.update(context(learner, accept_margin=0.0))
    assert row["actor_accepted"] == 1.0 and row["accept_v_after"] == row["accept_v_before"]
    assert learner.actor_opt.sched.last_epoch == 2
    learner, _ = acceptance_learner(worse=True)
    wide = aloe.update(context(learner, accept_margin=100.0))
    assert wide["actor_accepted"] == 1.0
    assert learner.actor_module.action_norm.mean.eq(-10.0).all()  # type: ignore[union-attr]
    learner, _ = acceptance_learner(worse=True)
    assert list(aloe.update(context(learner))) == list(aloe.UPDATE_COLUMNS)  # no new columns


# Validation


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"advantage": "ucb"}, r"aloe.advantage \('ucb'\): must be pess or lcb"),
        ({"lcb_kappa": -1.0}, r"aloe.lcb_kappa \(-1.0\): must be a finite number >= 0"),
        ({"best_of_n": 0}, r"aloe.best_of_n \(0\): must be >= 1"),
        ({"best_of_n_reduce": "max"}, r"aloe.best_of_n_reduce \('max'\): must be min or mean"),
        ({"best_of_n_target": True}, r"aloe.best_of_n_target \(True\): needs best_of_n > 1"),
        ({"accept_margin": -1.0}, r"aloe.accept_margin \(-1.0\): must be a finite number >= 0"),
        ({"accept_states": 0}, r"aloe.accept_states \(0\): must be >= 1"),
    ],
)
def test_config_errors_name_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        AloeConfig(**fields).validate()

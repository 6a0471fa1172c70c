"""RECAP (advantage-conditioned flow matching): the n-step advantage and the indicator on
hand-built tables, the indicator's dropout rate, classifier-free guidance of the compact
actor, and the learner's labels and actor step."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch

from aloe import data as D
from aloe.algos import recap
from aloe.algos.recap import RecapConfig, RecapLearner
from aloe.algos.recap_math import (
    drop_indicators,
    indicators,
    inside_fragment,
    n_step_advantage,
    positive_shares,
)
from aloe.algos.table import ALGORITHMS
from aloe.config import preset
from aloe.datasets.sampler import ChunkSampler
from aloe.errors import UsageError
from aloe.observation import Observations
from aloe.policies.flow import ActorConfig, FlowPolicy, euler_integrate
from aloe.policies.indicator import DROPPED, NEGATIVE, POSITIVE, Guidance, guided_velocity
from aloe.run import build_learner

N, P = NEGATIVE, POSITIVE


# The n-step advantage, by hand: γ = 0.5, n = 2, V(s_t) = −2 and V(s_{t+n}) = −4 everywhere.

# (source, rewards, end) per fragment; one episode per list
EPISODES = [
    [("policy", [-1.0, -1.0, -1.0, -10.0], "done"), ("human", [-1.0, -1.0, 0.0], "done")],
    [("demo", [-1.0, -1.0, -1.0], "truncated")],
]


def frames_of(episodes: list[list[tuple[str, list[float], str]]]) -> D.Frames:
    """Frames in global order; row i has state (i, 0) and next state (i + 1, 0)."""
    rows: list[dict[str, Any]] = []
    for e, fragments in enumerate(episodes):
        for f, (source, rewards, end) in enumerate(fragments):
            for k, r in enumerate(rewards):
                last = k == len(rewards) - 1
                rows.append(
                    {
                        D.REWARD: r,
                        D.DONE: last and end == "done",
                        D.TRUNCATED: last and end == "truncated",
                        D.SOURCE: source,
                        D.FRAGMENT: f,
                        D.EPISODE: e,
                        D.TASK: e % 2,
                    }
                )
    n = len(rows)
    cols = {key: np.array([r[key] for r in rows]) for key in rows[0]}
    frame = np.concatenate([np.arange(sum(len(f[1]) for f in ep)) for ep in episodes])
    state = np.stack([np.arange(n), np.zeros(n)], 1).astype(np.float32)
    return D.Frames(
        {
            **cols,
            D.REWARD: cols[D.REWARD].astype(np.float32),
            D.SOURCE: cols[D.SOURCE].astype(object),
            D.STATE: state,
            D.NEXT_STATE: state + [1.0, 0.0],
            D.ACTION: np.zeros((n, 2), np.float32),
            D.SUCCESS: np.zeros(n, bool),
            D.FRAME: frame,
            D.INDEX: np.arange(n),
        }
    )


def test_n_step_advantage_by_hand() -> None:
    """A_t = Σ_{k<2} 0.5^k r_{t+k} + 0.25 V(s_{t+2}) − V(s_t), the bootstrap only where s_{t+2}
    lies inside t's fragment: never past a success, a failure or a truncation (row 8: its
    fragment is truncated one step later, and the Monte-Carlo return V learns stops there)."""
    frames = frames_of(EPISODES)
    rows = np.arange(frames.rows)
    chunks = ChunkSampler(frames, horizon=2, gamma=0.5).chunks_at(rows)
    starts, ends = frames.fragment_bounds()
    inside = inside_fragment(np.repeat(ends, ends - starts), rows, 2)
    assert inside.tolist() == [1, 1, 0, 0, 1, 0, 0, 1, 0, 0]
    v, v_next = torch.full((10,), -2.0), torch.full((10,), -4.0)
    adv = n_step_advantage(chunks, v, v_next, torch.as_tensor(inside))
    # policy: −1.5 − 1 + 2, −1.5 − 1 + 2, −1 − 5 + 2, −10 + 2; human: −1.5 − 1 + 2, −1 + 2,
    # 0 + 2; demo: −1.5 − 1 + 2, −1.5 + 2 (truncated: no bootstrap), −1 + 2
    expected = [-0.5, -0.5, -4.0, -8.0, -0.5, 1.0, 2.0, -0.5, 0.5, 1.0]
    assert adv.tolist() == pytest.approx(expected)


# The indicator, by hand: percentile 60, two tasks, one operator row in each.

ADV = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 50.0, 10.0, 0.0, -10.0, -100.0])
TASK = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
HUMAN = np.array([0, 0, 0, 0, 0, 1, 0, 0, 0, 1], dtype=bool)


def test_indicator_thresholds_per_task_and_interventions_positive() -> None:
    """ε_0 = the 60th percentile of 1..5 (the operator's 50 left out) = 3.4; ε_1 = that of
    10, 0, −10 = 2; A > ε_ℓ is positive, and both operator rows are, whatever their A."""
    labels, eps = indicators(ADV, TASK, HUMAN, 60.0)
    assert labels.tolist() == [N, N, N, P, P, P, P, N, N, P]
    assert eps == pytest.approx({0: 3.4, 1: 2.0})


def test_indicator_without_interventions_positive_labels_every_row_by_its_advantage() -> None:
    """ε_0 = the 60th percentile of 1..5, 50 = 4; ε_1 = that of 10, 0, −10, −100 = −2."""
    labels, eps = indicators(ADV, TASK, HUMAN, 60.0, interventions_positive=False)
    assert labels.tolist() == [N, N, N, N, P, P, P, P, N, N]
    assert eps == pytest.approx({0: 4.0, 1: -2.0})


def test_a_tie_at_the_threshold_is_negative_and_the_share_is_bounded() -> None:
    labels, eps = indicators(np.zeros(8), np.zeros(8, int), np.zeros(8, bool), 70.0)
    assert eps == {0: 0.0} and (labels == N).all()  # all tied: none beats ε
    adv = np.random.default_rng(0).normal(size=1000)
    labels, _ = indicators(adv, np.zeros(1000, int), np.zeros(1000, bool), 70.0)
    assert (labels == P).mean() == pytest.approx(0.30, abs=0.001)


def test_positive_shares_per_source() -> None:
    labels = np.array([P, N, P, P, N])
    source = np.array(["demo", "demo", "policy", "human", "policy"], dtype=object)
    shares = positive_shares(labels, source)
    assert shares == pytest.approx(
        {
            "positive_frac": 0.6,
            "positive_demo_frac": 0.5,
            "positive_policy_frac": 0.5,
            "positive_human_frac": 1.0,
        }
    )
    assert np.isnan(positive_shares(labels[:2], source[:2])["positive_human_frac"])


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_the_indicator_is_dropped_at_its_rate(p: float) -> None:
    labels = torch.tensor([N, P] * 50_000)
    g = torch.Generator().manual_seed(0)
    shown = drop_indicators(labels, p, g)
    dropped = shown == DROPPED
    assert dropped.float().mean().item() == pytest.approx(p, abs=0.005)
    assert torch.equal(shown[~dropped], labels[~dropped])
    # independent of the label: each one is dropped at the same rate
    assert dropped[labels == P].float().mean().item() == pytest.approx(p, abs=0.007)
    assert torch.equal(drop_indicators(labels, 0.0, g), labels)


# Classifier-free guidance of the compact actor.

S, A, H, STEPS = 5, 2, 4, 3


def conditioned_actor(beta: float) -> FlowPolicy:
    torch.manual_seed(0)
    cfg = ActorConfig(num_flow_steps=STEPS, hidden_dim=16, num_layers=1, num_heads=2)
    actor = FlowPolicy(cfg, S, A, num_tasks=2, horizon=H)
    actor.use_indicator(Guidance(POSITIVE, beta))
    assert actor.indicator is not None
    with torch.no_grad():  # trained embeddings: each indicator a different policy
        actor.indicator.copy_(torch.randn(3, 16))
    return actor.eval()


def reference(actor: FlowPolicy, state: torch.Tensor, task: torch.Tensor, noise, beta):
    """The step-by-step Euler integration of the guided field, the branches apart."""
    with torch.no_grad():
        cond = actor.condition(state, task, torch.full_like(task, POSITIVE))
        free = actor.condition(state, task)

        def velocity(x, t):
            c, u = actor.velocity(x, t, cond), actor.velocity(x, t, free)
            return c if beta is None else guided_velocity(c, u, beta)

        return euler_integrate(velocity, noise, STEPS)


def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return (
        torch.randn(3, S, generator=g),
        torch.tensor([0, 1, 1]),
        torch.randn(3, H, A, generator=g),
    )


def test_cfg_with_beta_one_is_the_conditional_policy_exactly() -> None:
    actor = conditioned_actor(1.0)
    state, task, noise = inputs()
    chunks = actor.integrate(state, task, noise)
    cond = actor.condition(state, task, torch.full_like(task, POSITIVE))
    assert torch.equal(chunks, actor.euler(noise, cond, STEPS))  # one forward, no second branch
    torch.testing.assert_close(
        chunks, reference(actor, state, task, noise, None), atol=1e-5, rtol=0
    )
    # the guided rule at β = 1 returns the conditional field (to float rounding)
    both = torch.cat([cond, actor.condition(state, task)])
    torch.testing.assert_close(actor.euler(noise, both, STEPS, 1.0), chunks, atol=1e-6, rtol=0)


@pytest.mark.parametrize("beta", [0.0, 2.5])
def test_cfg_combines_both_fields_at_every_step(beta: float) -> None:
    """β = 2.5 extrapolates from the unconditional field; β = 0 is that field alone."""
    actor = conditioned_actor(beta)
    state, task, noise = inputs()
    chunks = actor.integrate(state, task, noise)
    torch.testing.assert_close(
        chunks, reference(actor, state, task, noise, beta), atol=1e-5, rtol=0
    )
    assert not torch.allclose(chunks, reference(actor, state, task, noise, None), atol=1e-3)


def test_cfg_is_one_batched_forward_per_step_and_rows_sample_as_alone() -> None:
    actor = conditioned_actor(2.0)
    state, task, _ = inputs()
    calls: list[int] = []
    velocity = actor.velocity
    actor.velocity = lambda x, t, c: calls.append(len(x)) or velocity(x, t, c)  # type: ignore[method-assign]
    field = actor.acting_velocity(state, task)
    field(torch.zeros(3, H, A), torch.zeros(3))
    assert calls == [6]  # both branches of 3 rows, in one call
    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    together = actor.sample(state, task, 2, gens)
    for i in range(3):
        alone = actor.sample(state[i : i + 1], task[i : i + 1], 2, torch.Generator().manual_seed(i))
        torch.testing.assert_close(together[i], alone[0], atol=1e-5, rtol=0)


def test_a_fresh_indicator_is_the_plain_policy_and_other_actors_are_unchanged() -> None:
    """Zero embeddings: a RECAP actor samples the plain actor's chunks; an actor without
    `use_indicator` has no indicator parameter and loads the plain actor's state."""
    torch.manual_seed(0)
    cfg = ActorConfig(num_flow_steps=STEPS, hidden_dim=16, num_layers=1, num_heads=2)
    plain = FlowPolicy(cfg, S, A, num_tasks=2, horizon=H)
    torch.manual_seed(0)
    conditioned = FlowPolicy(cfg, S, A, num_tasks=2, horizon=H)
    assert "indicator" not in plain.state_dict()
    conditioned.use_indicator(Guidance(POSITIVE, 3.0))
    assert set(conditioned.state_dict()) - set(plain.state_dict()) == {"indicator"}
    state, task, noise = inputs()
    torch.testing.assert_close(
        conditioned.integrate(state, task, noise), plain.integrate(state, task, noise)
    )
    FlowPolicy(cfg, S, A, num_tasks=2, horizon=H).load_state_dict(plain.state_dict())
    with pytest.raises(ValueError, match="not conditioned"):
        plain.condition(state, task, torch.zeros_like(task))


# The learner: labels of a buffer, then actor steps with the indicator.


def recap_config(advantage: str) -> Any:
    cfg = preset("smoke", "reach-v3")
    cfg.algo, cfg.progress = "recap", False
    cfg.env = dataclasses.replace(cfg.env, c_fail=10.0)
    cfg.optim = dataclasses.replace(cfg.optim, batch_size=4)
    cfg.recap = dataclasses.replace(
        cfg.recap, advantage=advantage, n_step=2, positive_percentile=50.0, drop_prob=0.25
    )
    return cfg.resolved()


def buffer(dim: int) -> D.Frames:
    frames = frames_of(EPISODES)
    n = frames.rows
    state = np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)
    return D.Frames(
        {
            **frames,
            D.STATE: state,
            D.NEXT_STATE: np.roll(state, -1, 0),
            D.ACTION: np.zeros((n, 4), np.float32),
            D.TASK: np.zeros(n, int),
        }
    )


@pytest.mark.parametrize("advantage", ["value", "q"])
def test_labels_then_actor_steps_train_the_indicator(advantage: str) -> None:
    cfg = recap_config(advantage)
    obs = Observations(cfg, "cpu")
    torch.manual_seed(0)
    learner = build_learner(cfg, obs=obs, c_fail=10.0)
    assert isinstance(learner, RecapLearner) and learner.actor.guidance == Guidance(POSITIVE, 1.0)
    frames = buffer(obs.dim)
    n = cfg.horizon if advantage == "q" else cfg.recap.n_step
    metrics = learner.label(frames, ChunkSampler(frames, horizon=n, gamma=0.99), batch=3)
    labels = learner.label_of.numpy()
    assert labels[4:7].tolist() == [P, P, P]  # the operator's fragment
    assert metrics["positive_human_frac"] == 1.0 and 0 < metrics["positive_policy_frac"] < 1
    assert set(metrics) >= set(recap.LABEL_COLUMNS)
    sampler = ChunkSampler(frames, horizon=cfg.horizon, gamma=cfg.optim.gamma, seed=0)
    before = learner.actor.indicator.detach().clone()
    step = learner.actor_step(sampler.sample(8))
    assert step["bc/loss"] > 0 and "actor/grad_norm" in step
    assert not torch.equal(learner.actor.indicator.detach(), before)  # the indicator trains
    critic = [p for p in learner.critic.parameters() if p.grad is not None]
    assert not critic  # the actor step leaves the value network alone


def test_an_update_reads_its_value_then_labels_then_its_actor_batches() -> None:
    cfg = recap_config("value")
    cfg.recap = dataclasses.replace(cfg.recap, value_steps=3, actor_steps=2)
    obs = Observations(cfg, "cpu")
    torch.manual_seed(0)
    learner = build_learner(cfg, obs=obs, c_fail=10.0)
    frames = buffer(obs.dim)
    from aloe.algos.context import UpdateContext

    def sampler(rows: D.Frames) -> ChunkSampler:
        return ChunkSampler(rows, horizon=cfg.horizon, gamma=cfg.optim.gamma, seed=0)

    row = recap.update(UpdateContext(cfg, cfg.recap, 1, frames, learner, sampler))
    assert np.isnan(row["weight_mean"]) and np.isnan(row["q_member_std"])
    assert row["critic_loss"] > 0 and np.isfinite(row["actor_flow_loss"])
    assert row["positive_human_frac"] == 1.0 and 0 <= row["indicator_dropped_frac"] <= 1


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("advantage", "pess", "recap.advantage ('pess'): must be value or q"),
        ("positive_percentile", 100.0, "recap.positive_percentile (100.0): must be in [0, 100)"),
        ("drop_prob", 1.0, "recap.drop_prob (1.0): must be in [0, 1)"),
        ("n_step", 0, "recap.n_step (0): must be >= 1"),
        ("cfg_beta", -1.0, "recap.cfg_beta (-1.0): must be >= 0"),
    ],
)
def test_settings_are_checked(field: str, value: Any, message: str) -> None:
    with pytest.raises(
        UsageError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
    ):
        dataclasses.replace(RecapConfig(), **{field: value}).validate()


# What evaluation reads of a RECAP run: its value's kind and its labels at buffer rows.


@pytest.mark.parametrize(("advantage", "kind"), [("value", "state"), ("q", "q")])
def test_the_value_evaluation_reads_is_the_advantage_sources(advantage: str, kind: str) -> None:
    cfg = recap_config(advantage)
    assert ALGORITHMS["recap"].value_kind(cfg) == kind
    # the other rows do not depend on RECAP's settings
    kinds = {a: row.value_kind(cfg) for a, row in ALGORITHMS.items() if a != "recap"}
    assert kinds == {"aloe": "q", "awr": "state", "dagger": None, "bc": None, "ppo-sbc": "state"}
    learner = build_learner(cfg, obs=Observations(cfg, "cpu"), c_fail=10.0)
    assert isinstance(learner, RecapLearner)
    state, task = torch.zeros(3, Observations(cfg, "cpu").dim), torch.zeros(3, dtype=torch.long)
    if advantage == "value":  # the state value the OPE scores, AWR's network
        torch.testing.assert_close(learner.value(state, task), learner.base.value(state, task))
    else:
        with pytest.raises(TypeError, match="not a state value"):
            learner.value(state, task)


@pytest.mark.parametrize("advantage", ["value", "q"])
def test_labels_at_rows_are_the_labels_the_actor_trains_on(advantage: str) -> None:
    """Over the whole buffer, from the same generator state, `labels_at` gives exactly the
    labels of the iteration (A, I, ε_ℓ), the operator's rows positive and not labelled."""
    cfg = recap_config(advantage)
    obs = Observations(cfg, "cpu")
    torch.manual_seed(0)
    learner = build_learner(cfg, obs=obs, c_fail=10.0)
    assert isinstance(learner, RecapLearner)
    frames = buffer(obs.dim)
    chunks = recap.labelling_chunks(cfg, cfg.recap, frames, learner.device)
    learner.generator.manual_seed(5)
    learner.label(frames, chunks, cfg.optim.batch_size)
    assert set(learner.thresholds) == {0}
    every = np.arange(frames.rows)
    learner.generator.manual_seed(5)
    labels = recap.labels_at(learner, cfg, frames, every)
    np.testing.assert_array_equal(labels.positive, learner.label_of.numpy()[every] == P)
    human = frames[D.SOURCE].astype(str) == "human"
    np.testing.assert_array_equal(labels.labelled, ~human)
    assert labels.positive[human].all() and labels.percentile == 50.0
    np.testing.assert_array_equal(labels.threshold, np.full(frames.rows, learner.thresholds[0]))
    eps = np.percentile(labels.advantage[~human], 50.0)  # the labels' own percentile
    assert learner.thresholds[0] == pytest.approx(eps)
    np.testing.assert_array_equal(labels.positive[~human], labels.advantage[~human] > eps)
    if advantage == "value":  # V is deterministic: any subset of rows, the same labels
        some = np.array([5, 0, 7])
        sub = recap.labels_at(learner, cfg, frames, some)
        np.testing.assert_allclose(sub.advantage, labels.advantage[some], rtol=1e-6)


def test_the_thresholds_are_saved_and_a_checkpoint_without_them_relabels() -> None:
    cfg = recap_config("value")
    obs = Observations(cfg, "cpu")
    torch.manual_seed(0)
    learner = build_learner(cfg, obs=obs, c_fail=10.0)
    assert isinstance(learner, RecapLearner)
    frames = buffer(obs.dim)
    learner.thresholds = {0: -1.25, 3: 0.5}
    state = learner.state_dict()
    assert state["recap_thresholds"] == {0: -1.25, 3: 0.5}
    fresh = build_learner(cfg, obs=obs, c_fail=10.0)
    assert isinstance(fresh, RecapLearner)
    fresh.load_state_dict(state)
    assert fresh.thresholds == {0: -1.25, 3: 0.5}
    older = {k: v for k, v in state.items() if k != "recap_thresholds"}
    fresh.load_state_dict(older)  # a checkpoint written before they were kept
    assert fresh.thresholds == {}
    labels = recap.labels_at(fresh, cfg, frames, np.arange(3))
    assert set(fresh.thresholds) == {0}  # the buffer labelled first, with the value as saved
    assert labels.threshold.tolist() == [fresh.thresholds[0]] * 3

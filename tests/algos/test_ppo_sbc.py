"""Action-chunked PPO + self behaviour cloning: hand-computed losses, GAE, the adaptive weight,
the buffer, and the learner's contracts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aloe import checkpoint
from aloe import data as D
from aloe.algos.optimised import OptimConfig
from aloe.algos.ppo_math import (
    chunk_gae,
    gaussian_log_prob,
    ppo_clip_loss,
    sbc_weight,
    self_demo_rows,
    update_success_average,
)
from aloe.algos.ppo_policy import ExploringChunkPolicy
from aloe.algos.ppo_sbc import PpoConfig, build_ppo_learner
from aloe.critics.chunked_q import CriticConfig
from aloe.data import ChunkBatch
from aloe.nn import Normalizer
from aloe.policies.flow import ActorConfig, FlowPolicy

S, A, H, E = 5, 2, 4, 2
LOG_2PI = math.log(2 * math.pi)


# The likelihood surrogate.


def test_gaussian_log_prob_hand_case() -> None:
    mean = torch.zeros(1, 2, 1)
    actions = torch.tensor([[[0.2], [5.0]]])  # second step is padding
    log_std = torch.tensor([math.log(0.1)])
    valid = torch.tensor([[1.0, 0.0]])
    # one valid scalar: z = 2 -> −½·4 − log 0.1 − ½ log 2π
    expected = -2.0 - math.log(0.1) - 0.5 * LOG_2PI
    assert gaussian_log_prob(actions, mean, log_std, valid).item() == pytest.approx(expected)


# PPO's clipped objective.


def test_ppo_clip_loss_hand_case() -> None:
    logp_old = torch.zeros(3)
    logp_new = torch.tensor([math.log(1.5), math.log(0.5), math.log(1.1)], requires_grad=True)
    adv = torch.tensor([1.0, -1.0, 2.0])
    loss, m = ppo_clip_loss(logp_new, logp_old, adv, clip=0.2)
    # min(1.5·1, 1.2·1) = 1.2; min(0.5·−1, 0.8·−1) = −0.8; min(1.1·2, 1.1·2) = 2.2
    assert loss.item() == pytest.approx(-(1.2 - 0.8 + 2.2) / 3)
    assert m["ppo/clip_frac"] == pytest.approx(2 / 3)
    assert m["ppo/ratio_mean"] == pytest.approx((1.5 + 0.5 + 1.1) / 3)
    loss.backward()
    # clipped terms carry no gradient; the third: d(−ρA/3)/d log π = −ρA/3
    assert torch.allclose(logp_new.grad, torch.tensor([0.0, 0.0, -2.2 / 3]))


def test_ppo_clip_loss_at_ratio_one_is_minus_mean_advantage() -> None:
    logp = torch.tensor([0.3, -1.0])
    loss, m = ppo_clip_loss(logp, logp, torch.tensor([2.0, -1.0]), clip=0.2)
    assert loss.item() == pytest.approx(-0.5) and m["ppo/approx_kl"] == 0.0


# Chunk-level GAE on a tiny trajectory: episode A terminates after 3 decisions, episode B is
# truncated after 2 (it bootstraps from V(s') but its advantage does not run on).

REWARD = torch.tensor([-1.0, -1.0, -2.0, -1.0, -1.0])
DISCOUNT = torch.tensor([0.9, 0.9, 0.81, 0.9, 0.9])  # γ^n, n = steps in the decision
BOOTSTRAP = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0])
VALUE = torch.tensor([-2.0, -1.5, -1.0, -3.0, -2.0])
NEXT_VALUE = torch.tensor([-1.5, -1.0, 5.0, -2.0, -4.0])  # 5.0 is past a termination: unused
LAST = torch.tensor([0.0, 0.0, 1.0, 0.0, 1.0])


def test_chunk_gae_hand_computed() -> None:
    adv, ret = chunk_gae(REWARD, DISCOUNT, BOOTSTRAP, VALUE, NEXT_VALUE, LAST, lam=0.5)
    # δ = (−0.35, −0.4, −1, 0.2, −2.6); A_j = δ_j + 0.9·0.5·(1 − last_j)·A_{j+1}
    a4, a2 = -2.6, -1.0
    a3 = 0.2 + 0.45 * a4
    a1 = -0.4 + 0.45 * a2
    a0 = -0.35 + 0.45 * a1
    expected = torch.tensor([a0, a1, a2, a3, a4])
    assert torch.allclose(adv, expected, atol=1e-6)
    assert torch.allclose(ret, expected + VALUE, atol=1e-6)


def test_chunk_gae_with_lambda_one_is_the_monte_carlo_return() -> None:
    _, ret = chunk_gae(REWARD, DISCOUNT, BOOTSTRAP, VALUE, NEXT_VALUE, LAST, lam=1.0)
    g2 = -2.0
    g1 = -1.0 + 0.9 * g2
    g0 = -1.0 + 0.9 * g1
    assert torch.allclose(ret[:3], torch.tensor([g0, g1, g2]), atol=1e-6)
    # the truncated episode bootstraps once, from V(s') of its last decision
    g4 = -1.0 + 0.9 * -4.0
    assert torch.allclose(ret[3:], torch.tensor([-1.0 + 0.9 * g4, g4]), atol=1e-6)


# The adaptive weight and the self-demonstration buffer.


def test_sbc_weight_rule() -> None:
    assert sbc_weight(0.0, 0.1, 1.0) == pytest.approx(1.0)  # all failing: lean on BC
    assert sbc_weight(1.0, 0.1, 1.0) == pytest.approx(0.1)  # all succeeding: PPO leads
    assert sbc_weight(0.5, 0.1, 1.0) == pytest.approx(0.55)
    assert sbc_weight(1.7, 0.1, 1.0) == pytest.approx(0.1)  # clamped
    avg = update_success_average(None, 0.2, rate=0.5)
    assert avg == 0.2  # starts at the first rate
    avg = update_success_average(avg, 0.6, rate=0.5)
    assert avg == pytest.approx(0.4)
    assert sbc_weight(avg, 0.1, 1.0) == pytest.approx(1.0 - 0.9 * 0.4)


def buffer_frames() -> D.Frames:
    # (episode, sources, success): demo ok, demo failed, policy ok, policy failed,
    # policy+human ok (helped: never a self-demonstration), policy ok
    eps = [
        (0, ["demo"] * 2, True),
        (1, ["demo"] * 2, False),
        (2, ["policy"] * 3, True),
        (3, ["policy"] * 2, False),
        (4, ["policy", "human"], True),
        (5, ["policy"] * 2, True),
    ]
    episode, source, success = [], [], []
    for ep, src, ok in eps:
        episode += [ep] * len(src)
        source += src
        success += [False] * (len(src) - 1) + [ok]
    return D.Frames(
        {
            D.EPISODE: np.array(episode),
            D.SOURCE: np.array(source, dtype=object),
            D.SUCCESS: np.array(success),
        }
    )


def test_self_demo_buffer_keeps_the_latest_unhelped_successes() -> None:
    f = buffer_frames()
    chosen = set(f["episode_index"][self_demo_rows(f, capacity=10)].tolist())
    assert chosen == {0, 2, 5}
    chosen = set(f["episode_index"][self_demo_rows(f, capacity=2)].tolist())
    assert chosen == {2, 5}  # FIFO: the demonstration makes room first
    # shortest: episode 0 (2 steps) and 5 (2 steps) beat 2 (3 steps); capacity 1 keeps the
    # latest of the two shortest
    chosen = set(f["episode_index"][self_demo_rows(f, capacity=2, rule="shortest")].tolist())
    assert chosen == {0, 5}
    assert set(f["episode_index"][self_demo_rows(f, 1, "shortest")].tolist()) == {5}
    assert set(f["episode_index"][self_demo_rows(f, 3, "shortest")].tolist()) == {0, 2, 5}


def test_self_demo_buffer_keeps_its_capacity_per_task() -> None:
    # tasks: 0 for episodes 0-2, 1 for 3-5 (each episode's rows share its task)
    f = buffer_frames()
    task = np.where(f["episode_index"] <= 2, 0, 1)
    f = D.Frames({**f, D.TASK: task})
    # successes without help: task 0 -> {0 (2 steps), 2 (3 steps)}, task 1 -> {5 (2 steps)}
    chosen = set(f["episode_index"][self_demo_rows(f, capacity=1)].tolist())
    assert chosen == {2, 5}  # the latest of each task, not the latest two overall
    chosen = set(f["episode_index"][self_demo_rows(f, 1, "shortest")].tolist())
    assert chosen == {0, 5}  # the shortest of each task
    assert set(f["episode_index"][self_demo_rows(f, 2)].tolist()) == {0, 2, 5}
    nothing = D.Frames({**f, D.SUCCESS: np.zeros(len(task), bool)})
    assert not self_demo_rows(nothing, 3).any()


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="ppo.clip"):
        PpoConfig(clip=1.5).validate()
    with pytest.raises(ValueError, match="ppo.init_std"):
        PpoConfig(init_std=2.0).validate()
    with pytest.raises(ValueError, match="ppo.sbc_buffer_rule.*recent, shortest"):
        PpoConfig(sbc_buffer_rule="best").validate()
    with pytest.raises(ValueError, match="ppo.value_warmup_iterations"):
        PpoConfig(value_warmup_iterations=-1).validate()


# The learner.


def tiny_learner(seed: int = 0):
    torch.manual_seed(seed)
    actor = FlowPolicy(
        ActorConfig(hidden_dim=16, num_layers=1, num_heads=2, num_flow_steps=3), S, A, 1, horizon=H
    )
    critic_cfg = CriticConfig(hidden_dim=16, num_layers=1, num_heads=2, head_hidden_dim=8)
    optim = OptimConfig(warmup_steps=0, seed=seed)
    ppo = PpoConfig(minibatch_size=4, bc_batch_size=4)
    return build_ppo_learner(actor, critic_cfg, S, Normalizer(S), ppo, optim, torch.device("cpu"))


def decision_batch(b: int = 6) -> ChunkBatch:
    g = torch.Generator().manual_seed(5)
    valid = torch.ones(b, E)
    valid[-1, 1:] = 0.0
    return ChunkBatch(
        state=torch.randn(b, S, generator=g),
        actions=torch.rand(b, E, A, generator=g) * 2 - 1,
        valid=valid,
        reward=-torch.ones(b),
        next_state=torch.randn(b, S, generator=g),
        discount=torch.full((b,), 0.99**E),
        bootstrap=torch.ones(b),
        mc_return=torch.zeros(b),
        task_index=torch.zeros(b, dtype=torch.long),
        source=torch.ones(b, dtype=torch.long),
        global_index=torch.arange(b),
    )


def demo_batch(b: int = 4) -> ChunkBatch:
    d = decision_batch(b)
    return d._replace(actions=torch.rand(b, H, A) * 2 - 1, valid=torch.ones(b, H))


def test_first_step_ratio_is_one() -> None:
    learner = tiny_learner()
    last = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    d = learner.decisions(decision_batch(), last, reward_scale=0.01)
    assert abs(d.advantage.mean().item()) < 1e-5  # normalised
    m = learner.ppo_step(d, demo_batch(), bc_weight=0.5)
    assert m["ppo/ratio_mean"] == 1.0 and m["ppo/approx_kl"] == 0.0
    assert m["sbc/weight"] == 0.5 and m["ppo/value_loss"] > 0


def test_value_warmup_step_moves_the_value_and_not_the_policy() -> None:
    learner = tiny_learner()
    d = learner.decisions(decision_batch(), torch.zeros(6), reward_scale=0.01)
    actor = [p.detach().clone() for p in learner.actor.parameters()]
    value = [p.detach().clone() for p in learner.critic.parameters()]
    m = learner.ppo_step(d, demo_batch(), bc_weight=0.5, policy=False)
    assert "ppo/approx_kl" not in m and m["ppo/value_loss"] > 0
    assert all(torch.equal(a, b) for a, b in zip(actor, learner.actor.parameters(), strict=True))
    assert not all(
        torch.equal(a, b) for a, b in zip(value, learner.critic.parameters(), strict=True)
    )


def test_ppo_step_moves_the_policy_and_its_std() -> None:
    learner = tiny_learner()
    d = learner.decisions(decision_batch(), torch.zeros(6), reward_scale=0.01)
    log_std = learner.actor.log_std.detach().clone()
    flow = [p.detach().clone() for p in learner.actor.flow.parameters()]
    learner.ppo_step(d, demo_batch(), bc_weight=0.5)
    assert not torch.equal(log_std, learner.actor.log_std)
    assert any(
        not torch.equal(a, b) for a, b in zip(flow, learner.actor.flow.parameters(), strict=True)
    )


def test_evaluation_policy_is_the_deterministic_mean() -> None:
    learner = tiny_learner()
    state = torch.randn(3, S)
    tasks = torch.zeros(3, dtype=torch.long)
    chunks = learner.actor.sample(state, tasks, num_samples=2)
    assert chunks.shape == (3, 2, H, A) and torch.equal(chunks[:, 0], chunks[:, 1])
    with torch.no_grad():
        mean = learner.actor.mean_chunk(state, tasks).clamp(-1, 1)
    assert torch.allclose(chunks[:, 0], mean, atol=1e-5)


def test_exploring_policy_is_reproducible_per_episode_seed() -> None:
    learner = tiny_learner()
    policy = ExploringChunkPolicy(
        learner.actor, version=0, exec_horizon=E, seed=3, device=torch.device("cpu")
    )
    obs = {"state": np.ones(S, np.float32)}
    policy.reset(7)
    first = policy.act_chunk(obs)
    policy.reset(7)
    assert np.array_equal(first, policy.act_chunk(obs)) and first.shape == (H, A)
    mean = learner.actor.sample(torch.ones(1, S), torch.zeros(1, dtype=torch.long))[0, 0]
    assert 0 < np.abs(first - mean.numpy()).mean() < 0.5  # noise of σ = 0.1 around μ


def test_state_dict_roundtrip_through_a_checkpoint(tmp_path) -> None:
    learner = tiny_learner(seed=0)
    learner.success_average = 0.25
    d = learner.decisions(decision_batch(), torch.zeros(6), reward_scale=0.01)
    learner.ppo_step(d, demo_batch(), bc_weight=0.5)
    checkpoint.save(tmp_path, 1, {"learner": learner.state_dict()})
    loaded = tiny_learner(seed=1)
    loaded.load_state_dict(checkpoint.load(tmp_path / "iter-0001")["learner"])
    assert loaded.success_average == 0.25
    assert torch.equal(loaded.actor.log_std, learner.actor.log_std)
    d2 = loaded.decisions(decision_batch(), torch.zeros(6), reward_scale=0.01)
    d1 = learner.decisions(decision_batch(), torch.zeros(6), reward_scale=0.01)
    assert all(torch.equal(a, b) for a, b in zip(d1, d2, strict=True))


def test_set_actor_lr_keeps_the_schedule_position(tmp_path) -> None:
    learner = tiny_learner()
    sched, group = learner.actor_opt.sched, learner.actor_opt.optim.param_groups[0]
    for _ in range(3):
        learner.actor_opt.optim.step()
        sched.step()
    learner.actor_opt.set_peak_lr(1e-5)
    assert group["lr"] == pytest.approx(1e-5 * sched.lr_lambdas[0](3))
    sched.step()
    assert group["lr"] == pytest.approx(1e-5 * sched.lr_lambdas[0](4))
    checkpoint.save(tmp_path, 1, {"learner": learner.state_dict()})
    loaded = tiny_learner(seed=1)
    loaded.load_state_dict(checkpoint.load(tmp_path / "iter-0001")["learner"])
    assert loaded.actor_opt.sched.base_lrs == [1e-5]
    assert loaded.actor_opt.optim.param_groups[0]["lr"] == pytest.approx(group["lr"])


@pytest.mark.slow  # a 2-iteration smoke run; test_value_warmup_step_moves_... is the fast check
def test_a_value_warmup_iteration_leaves_the_policy_at_its_bc_start(tmp_path) -> None:
    """--ppo.value-warmup-iterations 1: iteration 1 trains V(s) alone (its policy metrics
    are empty and its checkpoint's actor is the warm start's); iteration 2 moves π."""
    import json

    from aloe import checkpoint
    from aloe.config import preset
    from aloe.train import train

    cfg = preset("smoke")
    cfg.algo, cfg.out, cfg.progress = "ppo-sbc", tmp_path / "run", False
    cfg.ppo.value_warmup_iterations = 1
    train(cfg)
    rows = [json.loads(x) for x in (cfg.out / "metrics.jsonl").read_text().splitlines()]
    assert [r["ppo_value_warmup"] for r in rows[1:]] == [1.0, 0.0]
    assert rows[1]["ppo_approx_kl"] is None and rows[2]["ppo_approx_kl"] is not None
    actors = [
        checkpoint.load(cfg.out / "checkpoints" / f"iter-000{k}")["learner"]["actor"]
        for k in range(3)
    ]
    assert all(torch.equal(actors[0][n], actors[1][n]) for n in actors[0])
    assert not all(torch.equal(actors[1][n], actors[2][n]) for n in actors[1])

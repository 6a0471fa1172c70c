"""Batched evaluation (`aloe.rollout.play_batch`, `collect.evaluate(batch=N)`) plays the same
episodes as one at a time: success, steps and per-step rewards equal, episode for episode."""

import numpy as np
import pytest
import torch

from aloe.collect import batch_envs, evaluate
from aloe.config import TrainConfig
from aloe.envs.failures import FailureConfig
from aloe.envs.metaworld import EnvConfig, TaskEnv
from aloe.errors import UsageError
from aloe.evaluation.rollout import Trajectory
from aloe.policies.chunk_policy import FlowChunkPolicy, RandomPolicy
from aloe.policies.flow import ActorConfig, FlowPolicy
from aloe.rollout import batchable, play_batch, play_episode
from aloe.run_eval import EvalArgs

SEEDS = [1_000_000 + i for i in range(5)]
BATCHES = [1, 3, len(SEEDS)]


@pytest.fixture(scope="module")
def env():
    """Short episodes that end at different steps (a quick stall detector), so that envs
    finish apart and start the next seeds while others still run."""
    stall = FailureConfig(stall_steps=10, stall_min_gain=1e-4)
    return TaskEnv(EnvConfig(max_steps=30, c_fail=100.0, failures=stall))


def flow_policy(seed: int = 0) -> FlowChunkPolicy:
    torch.manual_seed(seed)
    cfg = ActorConfig(hidden_dim=16, num_layers=1, num_heads=2, num_flow_steps=3)
    actor = FlowPolicy(cfg, TaskEnv.STATE_DIM, TaskEnv.ACTION_DIM, 1, horizon=6)
    return FlowChunkPolicy(actor, version=3, exec_horizon=4, seed=seed, device=torch.device("cpu"))


def one_at_a_time(env, policy, seeds):
    out = []
    for seed in seeds:
        traj = Trajectory(states=[])
        counts = play_episode(env, seed, policy=policy, recorder=traj)
        out.append((counts, traj))
    return out


def assert_same(sequential, counts, trajs, *, state_atol: float) -> None:
    for (want, want_traj), got, traj in zip(sequential, counts, trajs, strict=True):
        assert (got.steps, got.policy_steps, got.success, got.failure_reason, got.truncated) == (
            want.steps,
            want.policy_steps,
            want.success,
            want.failure_reason,
            want.truncated,
        )
        assert traj.rewards == want_traj.rewards  # the per-episode return, step by step
        assert traj.chunk_starts == want_traj.chunk_starts
        np.testing.assert_allclose(
            np.array(traj.states), np.array(want_traj.states), rtol=0, atol=state_atol
        )


@pytest.mark.parametrize("batch", BATCHES)
def test_random_policy_batch_equals_one_at_a_time_exactly(env, batch):
    policy = RandomPolicy(horizon=6, seed=1)
    sequential = one_at_a_time(env, policy, SEEDS)
    trajs = [Trajectory(states=[]) for _ in SEEDS]
    counts = play_batch(batch_envs(env, batch), SEEDS, policy, recorders=trajs)
    assert_same(sequential, counts, trajs, state_atol=0.0)  # no matmul: bit for bit
    assert len({c.steps for c in counts}) > 1  # episodes end apart: envs start new seeds


@pytest.mark.parametrize("batch", BATCHES)
def test_flow_policy_batch_equals_one_at_a_time(env, batch):
    """Each row's noise comes from its episode's generator; only a batched matmul's last bits
    may differ from a single row's, far below anything that changes an outcome here."""
    policy = flow_policy()
    sequential = one_at_a_time(env, policy, SEEDS)
    trajs = [Trajectory(states=[]) for _ in SEEDS]
    counts = play_batch(batch_envs(env, batch), SEEDS, policy, recorders=trajs)
    assert_same(sequential, counts, trajs, state_atol=1e-3)
    assert len({c.steps for c in counts}) > 1


@pytest.mark.parametrize("batch", BATCHES)
def test_evaluate_batch_gives_the_sequential_result(env, batch):
    want = evaluate(env, flow_policy(), SEEDS)
    got = evaluate(env, flow_policy(), SEEDS, batch=batch)
    assert (got.lengths, got.successes, got.tasks) == (want.lengths, want.successes, want.tasks)
    assert got.as_dict() == pytest.approx(want.as_dict(), nan_ok=True)


def test_per_row_generators_draw_each_rows_own_noise():
    actor = flow_policy().actor
    state, task = torch.randn(4, TaskEnv.STATE_DIM), torch.zeros(4, dtype=torch.long)
    gens = [torch.Generator().manual_seed(i) for i in range(4)]
    batched = actor.sample(state, task, 2, gens)
    rows = [
        actor.sample(state[i : i + 1], task[i : i + 1], 2, torch.Generator().manual_seed(i))
        for i in range(4)
    ]
    assert batched.shape == (4, 2, 6, 4)
    torch.testing.assert_close(batched, torch.cat(rows), rtol=0, atol=1e-5)
    one = actor.sample(state[:1], task[:1], 2, [torch.Generator().manual_seed(0)])
    assert torch.equal(one, rows[0])  # a batch of one is the single call, bit for bit


def test_a_policy_without_act_chunks_plays_one_at_a_time(env):
    class Plain:  # a ChunkPolicy only
        version, exec_horizon = 0, 6

        def __init__(self) -> None:
            self.inner = RandomPolicy(horizon=6, seed=1)

        def reset(self, seed: int) -> None:
            self.inner.reset(seed)

        def act_chunk(self, obs):
            return self.inner.act_chunk(obs)

    want = evaluate(env, RandomPolicy(horizon=6, seed=1), SEEDS, batch=3)
    got = evaluate(env, Plain(), SEEDS, batch=3)
    assert (got.lengths, got.successes) == (want.lengths, want.successes)


def test_a_subclass_changing_act_chunk_alone_is_not_batched():
    class Greedy(FlowChunkPolicy):
        def act_chunk(self, obs):
            return np.zeros((6, 4), dtype=np.float32)

    assert batchable(flow_policy()) and batchable(RandomPolicy())
    assert not batchable(
        Greedy(flow_policy().actor, version=0, exec_horizon=4, seed=0, device=torch.device("cpu"))
    )


def test_copies_are_built_once_and_reused(env):
    first = batch_envs(env, 3)
    assert first[0] is env and len({id(e) for e in first}) == 3
    assert batch_envs(env, 2) == first[:2] and batch_envs(env, 3) == first
    assert batch_envs(env, 1) == [env]


def test_bad_batch_sizes_are_refused(tmp_path):
    with pytest.raises(UsageError, match=r"^config field eval_batch \(0\): must be >= 1$"):
        TrainConfig(eval_batch=0).validate()
    with pytest.raises(UsageError, match=r"^--batch \(0\): must be >= 1$"):
        EvalArgs(run=tmp_path, batch=0).validate()


@pytest.mark.parametrize(
    "argv, line",
    [
        (
            "train --eval-batch 0 --out {out}",
            "aloe train: error: config field eval_batch (0): must be >= 1",
        ),
        ("eval --run {out} --batch 0", "aloe eval: error: --batch (0): must be >= 1"),
    ],
)
def test_the_cli_refuses_a_bad_batch_before_any_work(tmp_path, capsys, argv, line):
    from aloe.cli import main

    out = tmp_path / "run"
    assert main(argv.format(out=out).split()) == 2
    assert capsys.readouterr().err.strip() == line
    assert not out.exists()

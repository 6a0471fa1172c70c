"""A simulator is one module plus one row: `tests/envs/fake_sim.py`, registered for the test,
runs through the lookups, the rollout engine and the CLI with nothing else in src/ changed."""

from __future__ import annotations

import json

import fake_sim
import numpy as np
import pytest

from aloe import data as D
from aloe.envs.base import EnvConfig


@pytest.fixture
def point(monkeypatch):
    fake_sim.register(monkeypatch)
    return fake_sim.BACKEND


def test_the_row_answers_every_lookup(point):
    from aloe.envs.registry import backend_of, camera_names, make_env, operator_episode_length
    from aloe.envs.tasks import INSTRUCTIONS, check_task, supported_tasks, task_dims, task_list
    from aloe.operators.profiles import make_operator
    from aloe.operators.scripted import OperatorConfig

    assert backend_of(fake_sim.TASK) is point
    assert fake_sim.TASK in supported_tasks()
    assert INSTRUCTIONS[fake_sim.TASK] == fake_sim.INSTRUCTION
    assert check_task(fake_sim.TASK) == fake_sim.TASK
    assert task_list(fake_sim.TASK) == [fake_sim.TASK]
    assert tuple(task_dims(fake_sim.TASK)) == (2, 1)
    assert camera_names(fake_sim.TASK) == ()
    assert isinstance(make_env(EnvConfig(task=fake_sim.TASK)), fake_sim.PointEnv)
    assert isinstance(make_operator(fake_sim.TASK, OperatorConfig()), fake_sim.PointOracle)
    assert 1 < operator_episode_length(fake_sim.TASK) < 20


def test_register_adds_the_row_beside_the_others(point):
    from aloe.envs.registry import BACKENDS

    assert BACKENDS["point"] is point
    assert set(BACKENDS) >= {"metaworld", "ogbench", "point"}


def test_its_tasks_do_not_mix_with_another_simulators(point):
    from aloe.envs.tasks import task_list

    with pytest.raises(ValueError, match="share one simulator"):
        task_list(f"{fake_sim.TASK},reach-v3")


def test_an_operator_demonstration_is_a_run_of_the_rollout_engine(point):
    from aloe.operators.scripted import OperatorConfig
    from aloe.rollout import record_episode

    env = fake_sim.PointEnv(EnvConfig(task=fake_sim.TASK, max_steps=50, c_fail=5.0))
    oracle = fake_sim.PointOracle(OperatorConfig(noise_std=0.0))
    run = record_episode(env, 3, policy=None, operator=oracle)
    steps = run.episode.steps
    assert run.counts.success and run.counts.policy_steps == 0
    assert set(steps[D.SOURCE].tolist()) == {"demo"}
    assert np.all(steps[D.REWARD][:-1] == -1.0) and steps[D.REWARD][-1] == 0.0


def test_a_policy_fragment_is_cut_and_the_operator_completes_it(point):
    from aloe.operators.scripted import OperatorConfig
    from aloe.policies.chunk_policy import RandomPolicy
    from aloe.rollout import Takeover, record_episode

    env = fake_sim.PointEnv(EnvConfig(task=fake_sim.TASK, max_steps=30, c_fail=5.0))
    oracle = fake_sim.PointOracle(OperatorConfig(noise_std=0.0, patience=5))
    policy = RandomPolicy(1, seed=0)
    run = record_episode(env, 1, policy=policy, operator=oracle, takeover=Takeover())
    sources = run.episode.steps[D.SOURCE].tolist()
    assert run.counts.takeovers >= 1 and "human" in sources and run.counts.success


@pytest.mark.slow
def test_collect_train_and_eval_run_the_fake_simulator(point, tmp_path, capsys):
    from aloe.cli import main

    demos = tmp_path / "demos"
    assert main(["collect", "--task", fake_sim.TASK, "--episodes", "2", "--out", str(demos)]) == 0
    run = tmp_path / "run"
    train = [
        "train",
        "--task",
        fake_sim.TASK,
        "--preset",
        "smoke",
        "--out",
        str(run),
        "--no-progress",
        "--iterations",
        "1",
        "--num-demos",
        "1",
        "--bc-steps",
        "5",
        "--eval-episodes",
        "1",
        "--env.max-steps",
        "40",
    ]
    assert main(train) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1]
    assert json.loads((run / "config.json").read_text())["task"] == fake_sim.TASK
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--episodes", "2"]) == 0
    assert "success_rate" in capsys.readouterr().out

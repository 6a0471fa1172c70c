"""The operator profiles: `oracle` is the scripted operator, bit for bit; `human` is a
reproducible simulated person with a reaction time, time-correlated noise and mistakes that
still completes the task."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from aloe import data as D
from aloe.envs.metaworld import EnvConfig, TaskEnv
from aloe.errors import UsageError
from aloe.operators.human import Drift, HumanConfig, HumanOperator, Tremor, hold_action
from aloe.operators.profiles import make_operator
from aloe.operators.scripted import OperatorConfig, ScriptedOperator, expert_policy
from aloe.policies.chunk_policy import RandomPolicy
from aloe.rollout import play_episode, record_episode

TASK = "pick-place-v3"
HUMAN = OperatorConfig(profile="human")
ORACLE = OperatorConfig(profile="oracle")


@pytest.fixture(scope="module")
def env() -> TaskEnv:
    return TaskEnv(EnvConfig(task=TASK, max_steps=150, c_fail=100.0))


def actions(env: TaskEnv, op, seed: int, policy=None) -> np.ndarray:
    rollout = record_episode(env, seed, policy=policy, operator=op, record_sim_state=False)
    return rollout.episode.steps[D.ACTION]


def test_human_is_reproducible_per_seed(env):
    op = make_operator(TASK, HUMAN)
    assert isinstance(op, HumanOperator)
    first, again = actions(env, op, 3), actions(env, make_operator(TASK, HUMAN, seed=99), 3)
    assert np.array_equal(first, again)  # reset(seed) reseeds everything
    other = actions(env, op, 4)
    n = min(len(first), len(other))
    assert not np.allclose(first[:n], other[:n])


def test_oracle_is_the_scripted_operator_exactly(env):
    for cfg in (
        ORACLE,
        OperatorConfig(profile="oracle", noise_std=0.2, delay_steps=2, patience=20),
    ):
        built = make_operator(TASK, cfg)
        assert type(built) is ScriptedOperator
        for seed in (0, 5):
            assert np.array_equal(
                actions(env, built, seed), actions(env, ScriptedOperator(TASK, cfg), seed)
            )
        policy = RandomPolicy(seed=1)  # takeovers: the retreat, the rewind, the watch
        assert np.array_equal(
            actions(env, built, 7, policy), actions(env, ScriptedOperator(TASK, cfg), 7, policy)
        )


def lag1(x: np.ndarray) -> float:
    """Lag-1 autocorrelation, per column, averaged."""
    x = x - x.mean(0)
    return float(np.mean((x[1:] * x[:-1]).sum(0) / (x * x).sum(0)))


def test_drift_and_tremor_are_correlated_in_time_with_the_stds_asked_for():
    rng = np.random.default_rng(0)
    drift_gen = Drift(0.03, 40.0, 3, rng)
    drift = np.array([drift_gen.sample() for _ in range(20000)])
    tremor_gen = Tremor(0.06, 9.0, 3.0, 3, rng)
    tremor = np.array([tremor_gen.sample() for _ in range(20000)])[200:]  # past its start
    white = rng.standard_normal((20000, 3))
    assert abs(lag1(white)) < 0.05
    assert lag1(drift) == pytest.approx(math.exp(-1 / 40), abs=0.02)  # OU: a = exp(-1/τ)
    r, w = math.exp(-math.pi * 3 / 80), 2 * math.pi * 9 / 80
    assert lag1(tremor) == pytest.approx(2 * r * math.cos(w) / (1 + r * r), abs=0.03)  # AR(2)
    assert drift.std() == pytest.approx(0.03, rel=0.2)
    assert tremor.std() == pytest.approx(0.06, rel=0.1)


def test_human_action_noise_is_correlated_in_time_unlike_the_oracle(env):
    """The deviation of the executed actions from the noise-free expert on the same
    observations: white for the oracle, strongly correlated from step to step for the person
    (mistakes, lag and the speed cap switched off, so the deviation is the noise alone)."""
    calm = HumanConfig(
        lag_steps=0,
        speed=1.0,
        wrong_approach_prob=0,
        grasp_slip_prob=0,
        drop_prob=0,
        overshoot_prob=0,
        skill_spread=0,
    )
    expert = expert_policy(TASK)
    for cfg, low, high in (
        (ORACLE, -0.2, 0.2),
        (OperatorConfig(profile="human", human=calm), 0.5, 1.0),
    ):
        op, res = make_operator(TASK, cfg), []
        for seed in range(3):
            obs, _ = env.reset(seed=seed)
            op.reset(seed)
            for _ in range(60):
                a = op.act(obs)
                plan = np.clip(expert.get_action(obs["state"]), -1, 1)
                if np.all(np.abs(a[:3]) < 1):
                    res.append(a[:3] - plan[:3])
                obs, _, term, trunc, _ = env.step(a)
                if term or trunc:
                    break
        assert low < lag1(np.array(res)) < high


def test_reaction_time_holds_the_robot_after_a_takeover(env):
    cfg = dataclasses.replace(HUMAN, patience=20)
    op = make_operator(TASK, cfg)
    steps = record_episode(
        env, 2, policy=RandomPolicy(seed=0), operator=op, record_sim_state=False
    ).episode.steps
    human = np.flatnonzero(steps[D.SOURCE] == "human")
    assert len(human) > cfg.human.reaction_steps
    held = human[: cfg.human.reaction_steps]
    for i in held:
        assert np.array_equal(steps[D.ACTION][i], hold_action(steps[D.STATE][i]))
    assert np.all(steps[D.ACTION][held, :3] == 0)
    after = steps[D.ACTION][human[cfg.human.reaction_steps]]
    assert after[2] > 0.3 and after[3] == -1.0  # then the retreat: open and lift


def test_human_demonstrations_succeed_on_pick_place(env):
    op = make_operator(TASK, HUMAN)
    oracle = make_operator(TASK, ORACLE)
    for seed in (0, 1, 2):
        person = play_episode(env, seed, policy=None, operator=op)
        assert person.success
        assert person.steps > play_episode(env, seed, policy=None, operator=oracle).steps


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (
            OperatorConfig(profile="robot"),
            "operator.profile ('robot'): must be one of oracle, human, clumsy",
        ),
        (
            OperatorConfig(human=HumanConfig(reaction_steps=-1)),
            "operator.human.reaction_steps (-1): must be >= 0",
        ),
        (
            OperatorConfig(human=HumanConfig(speed=0.0)),
            "operator.human.speed (0.0): must be a finite number in (0, 1]",
        ),
        (
            OperatorConfig(human=HumanConfig(drop_prob=1.5)),
            "operator.human.drop_prob (1.5): must be in [0, 1]",
        ),
        (
            OperatorConfig(human=HumanConfig(tremor_hz=40.0)),
            "operator.human.tremor_hz (40.0): must be a finite number in (0, 40) (below Nyquist at 80 Hz)",
        ),
        (
            OperatorConfig(human=HumanConfig(drift_std=math.nan)),
            "operator.human.drift_std (nan): must be a finite number >= 0",
        ),
    ],
)
def test_validation_names_the_field(cfg, message):
    with pytest.raises(UsageError) as e:
        cfg.validate()
    assert str(e.value) == message
    with pytest.raises(UsageError, match=r"^config field operator\."):
        cfg.validate("config field ")


def test_a_human_profile_round_trips_through_config_json():
    from aloe.config import TrainConfig, preset

    cfg = preset("smoke")
    cfg.operator = OperatorConfig(profile="human", human=HumanConfig(reaction_steps=12))
    back = TrainConfig.from_json(cfg.resolved().to_json())
    assert back.operator == cfg.operator


CLUMSY = OperatorConfig(profile="clumsy")


def test_clumsy_is_the_human_made_three_times_as_error_prone():
    person = CLUMSY.person()
    base = HumanConfig()
    assert HUMAN.person() == base
    assert person.wrong_approach_prob == 0.75 and person.drop_prob == pytest.approx(0.45)
    assert person.drift_std == pytest.approx(0.09) and person.tremor_std == pytest.approx(0.18)
    assert person.reaction_steps == base.reaction_steps and person.speed == base.speed
    sure = OperatorConfig(profile="clumsy", human=HumanConfig(drop_prob=0.5)).person()
    assert sure.drop_prob == 1.0  # a probability stays one
    op = make_operator(TASK, CLUMSY)
    assert isinstance(op, HumanOperator) and op.cfg == person


def test_clumsy_is_reproducible_per_seed_and_differs_from_the_human(env):
    op = make_operator(TASK, CLUMSY)
    first, again = actions(env, op, 3), actions(env, make_operator(TASK, CLUMSY, seed=99), 3)
    assert np.array_equal(first, again)
    person = actions(env, make_operator(TASK, HUMAN), 3)
    n = min(len(first), len(person))
    assert not np.allclose(first[:n], person[:n])
    policy = RandomPolicy(seed=1)  # its corrections after a takeover too
    fixes = actions(env, op, 7, policy), actions(env, make_operator(TASK, CLUMSY), 7, policy)
    assert np.array_equal(*fixes)

"""Action-level failure events (aloe.envs.failures): each fires on a state built in MuJoCo,
none fires along the scripted expert's episodes, and they judge the policy only."""

import mujoco
import numpy as np
import pytest

from aloe import data as D
from aloe.envs.failures import EVENT_PREFIXES, EVENTS, FailureConfig
from aloe.envs.metaworld import EnvConfig, TaskEnv
from aloe.errors import UsageError
from aloe.operators.scripted import expert_policy
from aloe.rollout import EpisodeRecorder, Takeover, play_episode

OPEN, CLOSE = [0, 0, 0, -1.0], [0, 0, 0, 1.0]


def make(task: str = "pick-place-v3", **failures) -> TaskEnv:
    cfg = FailureConfig(action_level=True, **failures)
    return TaskEnv(EnvConfig(task=task, c_fail=100.0, failures=cfg))


@pytest.fixture(scope="module")
def env() -> TaskEnv:
    return make()


def drive(env: TaskEnv, action, steps: int) -> str:
    """Repeat `action`; the first failure reason ("" if none)."""
    for _ in range(steps):
        *_, info = env.step(np.asarray(action, dtype=np.float64))
        if info["failure_reason"]:
            return info["failure_reason"]
    return ""


def object_dofs(env: TaskEnv) -> tuple[int, int]:
    m = env.raw.model
    j = next(j for j in range(m.njnt) if m.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE)
    return int(m.jnt_qposadr[j]), int(m.jnt_dofadr[j])


def grasp_and_lift(env: TaskEnv, seed: int = 0) -> None:
    """The expert grasps the object; then the closed gripper lifts it 6 cm, off the goal."""
    obs, _ = env.reset(seed=seed)
    expert = expert_policy(env.task)
    for _ in range(100):
        contacts = env.probe.read()
        if contacts.left and contacts.right:
            break
        obs, *_ = env.step(expert.get_action(obs["state"]))
    assert contacts.left and contacts.right
    assert drive(env, CLOSE, 5) == "" and drive(env, [0, 0, 1, 1], 10) == ""


def empty_grasp(env: TaskEnv) -> str:
    env.reset(seed=0)  # the hand starts 19 cm from the object
    return drive(env, CLOSE, 30)


def knocked_away(env: TaskEnv) -> str:
    env.reset(seed=0)
    env.raw.data.qvel[object_dofs(env)[1]] = 1.5  # shoved along x, nothing touching it
    return drive(env, OPEN, 30)


def release_in_air(env: TaskEnv) -> str:
    grasp_and_lift(env)
    return drive(env, OPEN, 20)


def drop(env: TaskEnv) -> str:
    grasp_and_lift(env)
    env.raw.data.qpos[object_dofs(env)[0]] += 0.06  # out of the fingers, which stay closed
    return drive(env, CLOSE, 20)


def table_hit(env: TaskEnv) -> str:
    env.reset(seed=0)
    assert drive(env, [-1, 0, 0, -1], 20) == ""  # away from the object
    return drive(env, [0, 0, -1, -1], 40)


def contact_force(env: TaskEnv) -> str:
    env.reset(seed=0)  # peg-insert-side: the hand driven into the box
    assert drive(env, [0, 0.3, -1, -1], 8) == ""
    return drive(env, [-1, 0, 0, -1], 60)


SCENES = {
    "empty_grasp": empty_grasp,
    "knocked_away": knocked_away,
    "release_in_air": release_in_air,
    "drop": drop,
    "table_hit": table_hit,
    "contact_force": contact_force,
}


@pytest.mark.parametrize("event", EVENTS)
def test_each_event_fires_on_a_constructed_state(env, event):
    scene_env = make("peg-insert-side-v3") if event == "contact_force" else env
    reason = SCENES[event](scene_env)
    assert reason.startswith(EVENT_PREFIXES[EVENTS.index(event)] + ": "), reason


@pytest.mark.parametrize("event", ["empty_grasp", "release_in_air", "table_hit"])
def test_an_event_is_off_without_its_switch_or_the_master_switch(event):
    for env in (
        make(**{event: False}),
        TaskEnv(EnvConfig(c_fail=100.0, failures=FailureConfig(action_level=False))),
    ):
        assert not SCENES[event](env).startswith(EVENT_PREFIXES)


def expert_outcomes(env: TaskEnv, seeds: range, noise: float = 0.1) -> list[tuple[bool, str]]:
    expert, out = expert_policy(env.task), []
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        rng = np.random.default_rng(seed)
        done = False
        while not done:
            action = expert.get_action(obs["state"]) + noise * rng.standard_normal(4)
            obs, _, term, trunc, info = env.step(np.clip(action, -1, 1))
            done = term or trunc
        out.append((bool(info["success"]), info["failure_reason"]))
    return out


def test_no_event_along_expert_episodes_and_the_oracles_success_holds(env):
    seeds = range(20)
    off = expert_outcomes(TaskEnv(EnvConfig(c_fail=100.0)), seeds)
    on = expert_outcomes(env, seeds)
    assert not [r for _, r in on if r.startswith(EVENT_PREFIXES)]
    rate = [np.mean([s for s, _ in runs]) for runs in (off, on)]
    assert abs(rate[0] - rate[1]) <= 0.05 and rate[1] >= 0.9


def test_events_are_off_while_the_operator_controls(env):
    env.reset(seed=0)
    env.hand_to("operator")
    assert drive(env, CLOSE, 30) == ""
    assert drive(env, OPEN, 20) == ""
    env.hand_to("policy")
    assert drive(env, CLOSE, 30).startswith("empty grasp")


class Chunks:
    """A policy whose every chunk closes the gripper."""

    version, exec_horizon = 0, 5

    def reset(self, seed: int) -> None: ...

    def act_chunk(self, obs):
        return np.tile(np.float32(CLOSE), (5, 1))


class Fumbler:
    """An operator that opens and closes the gripper in the air, every 15 steps."""

    def __init__(self) -> None:
        self.t = 0

    def reset(self, seed: int) -> None:
        self.t = 0

    def start_watching(self) -> None: ...

    def watch(self, obs, info):
        return None

    def take_over(self, reason, history):
        return len(history) - 1

    def act(self, obs):
        self.t += 1
        return np.float32(OPEN if (self.t // 15) % 2 == 0 else CLOSE)


def test_the_rollout_hands_control_so_that_only_the_policys_fumble_is_a_failure(env):
    rec = EpisodeRecorder(record_sim_state=False)
    counts = play_episode(
        env,
        0,
        policy=Chunks(),
        operator=Fumbler(),
        takeover=Takeover(operator_max_steps=90),
        recorder=rec,
    )
    assert counts.failure_reason.startswith("empty grasp") and counts.takeovers == 1
    steps = rec.episode(env, {}).steps
    human = steps[D.SOURCE] == "human"
    assert human.sum() == 90 and set(steps[D.FAILURE_REASON][human]) <= {"", "timeout"}
    # a demonstration is the operator's too
    demo = EpisodeRecorder(record_sim_state=False)
    play_episode(env, 1, policy=None, operator=Fumbler(), recorder=demo)
    assert not [
        r for r in demo.episode(env, {}).steps[D.FAILURE_REASON] if r.startswith(EVENT_PREFIXES)
    ]


def test_snapshot_restore_then_replay_is_identical_with_events_on(env):
    obs, _ = env.reset(seed=3)
    expert = expert_policy(env.task)
    for _ in range(30):  # the object in the fingers
        obs, *_ = env.step(expert.get_action(obs["state"]))
    snap = env.snapshot()
    # the detector's state is plain data (the probe's MuJoCo handles live on the env)
    assert not [k for k, v in vars(env.detector).items() if type(v).__module__.startswith("mujoco")]
    rng = np.random.default_rng(0)
    actions = np.concatenate([rng.uniform(-1, 1, (20, 4)), np.tile([0, 0, 0.5, -1.0], (20, 1))])

    def play():
        out = [env.step(a) for a in actions]
        return [(o["state"], i["failure_reason"]) for o, _, _, _, i in out]

    first = play()
    assert any(reason.startswith(EVENT_PREFIXES) for _, reason in first)
    env.restore(snap)
    second = play()
    assert all(
        np.array_equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(first, second, strict=True)
    )


def test_the_task_table_turns_off_what_cannot_apply():
    cfg = FailureConfig(action_level=True)
    assert cfg.events("pick-place-v3", True) == frozenset(EVENTS)
    assert cfg.events("door-open-v3", False) == {"table_hit"}
    assert cfg.events("reach-v3", True) == {"table_hit", "contact_force"}
    assert cfg.events("some-fixture-task-v3", False) == {"table_hit"}
    assert FailureConfig(action_level=False).events("pick-place-v3", True) == frozenset()
    assert make("door-open-v3").events == {"table_hit"}


@pytest.mark.parametrize(
    ("field", "value", "text"),
    [
        ("knock_distance", 0.0, "env.failures.knock_distance (0.0): must be a finite number > 0"),
        (
            "closed_opening",
            1.5,
            "env.failures.closed_opening (1.5): must be a gripper opening "
            "between 0 and 1 (exclusive)",
        ),
        ("release_steps", 0, "env.failures.release_steps (0): must be >= 1"),
        (
            "table_force",
            -1.0,
            "env.failures.table_force (-1.0): must be a finite number of newtons >= 0",
        ),
    ],
)
def test_config_checks_name_the_field(field, value, text):
    cfg = EnvConfig(failures=FailureConfig(**{field: value}))
    with pytest.raises(UsageError) as e:
        cfg.validate()
    assert str(e.value) == text

"""The robot client without a server: the asynchronous schedule, teleop devices, pacing."""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace

import numpy as np
import pytest

from aloe.robot.client import RobotClient
from aloe.robot.teleop import KeyboardTeleop, TeleopOperator, as_operator


class FakeConnection:
    """Answers at once; request k's chunk is k + 0.01 * (its index)."""

    url = "ws://fake"
    connected = True

    def __init__(self) -> None:
        self.metadata = {"horizon": 10, "exec_horizon": 5, "policy_version": 3}
        self.sent: list[dict] = []

    def submit(self, msg: dict) -> Future:
        self.sent.append(msg)
        future: Future = Future()
        if msg.get("type") == "episode_start":
            future.set_result({"policy_version": 3})
        else:
            k = sum("type" not in m for m in self.sent) - 1
            chunk = k + 0.01 * np.arange(10, dtype=np.float32)[:, None].repeat(4, 1)
            future.set_result({"actions": chunk.astype(np.float32)})
        return future

    def wait(self, future: Future) -> dict:
        return future.result()

    def call(self, msg: dict) -> dict:
        return self.wait(self.submit(msg))


def obs(t: int) -> dict:
    return {"state": np.full(39, t, np.float32), "instruction": "x"}


def run_policy_steps(client: RobotClient, steps: int) -> list[np.ndarray]:
    """Execute as `PolicyFragment.run` does: a chunk whenever the queue is empty."""
    client._env = SimpleNamespace(instruction="x")
    client.reset(0)
    queue: list[np.ndarray] = []
    done = []
    for t in range(steps):
        if not queue:
            queue = list(client.act_chunk(obs(t)))
        done.append(queue.pop(0))
        client.stepped(obs(t + 1))
    return done


def test_async_execution_continues_at_the_delay_with_the_rtc_prefix():
    conn = FakeConnection()
    client = RobotClient(conn, asynchronous=True, rtc=True, steps_ahead=2)  # type: ignore[arg-type]
    executed = np.array(run_policy_steps(client, 10))[:, 0]
    # chunk 0 gives actions 0..4; chunk 1 was asked for with 2 actions left, at step 3's
    # observation, so the robot continues at its action 2; chunk 2 likewise
    want = [0.00, 0.01, 0.02, 0.03, 0.04, 1.02, 1.03, 1.04, 1.05, 1.06]
    np.testing.assert_allclose(executed, want, atol=1e-6)
    requests = [m for m in conn.sent if "type" not in m]
    assert requests[1]["observation.state"][0] == 3  # sent after 3 steps
    np.testing.assert_allclose(requests[1]["rtc.prefix"][:, 0], 0.01 * np.arange(3, 10), atol=1e-6)
    assert requests[1]["rtc.delay"] == 2 and "rtc.prefix" not in requests[0]
    assert client.version == 3 and client.timing.chunks == 2 and len(requests) == 3  # 1 in flight


def test_sync_execution_waits_for_each_chunk_from_its_start():
    conn = FakeConnection()
    client = RobotClient(conn, asynchronous=False)  # type: ignore[arg-type]
    executed = np.array(run_policy_steps(client, 10))[:, 0]
    np.testing.assert_allclose(
        executed, [0, 0.01, 0.02, 0.03, 0.04, 1, 1.01, 1.02, 1.03, 1.04], atol=1e-6
    )
    assert [m["observation.state"][0] for m in conn.sent if "type" not in m] == [0, 5]


def test_a_takeover_drops_the_chunk_in_flight():
    conn = FakeConnection()
    client = RobotClient(conn, asynchronous=True, steps_ahead=5)  # type: ignore[arg-type]
    run_policy_steps(client, 1)
    assert client._pending is not None
    client.handed_to("operator")
    assert client._pending is None and client._queued == 0


def test_keyboard_teleop_takes_over_and_moves():
    keys = iter(["", " wwg", "", "", "d"])
    teleop = KeyboardTeleop(speed=0.25, read_keys=lambda: next(keys))
    op = as_operator(teleop)
    assert isinstance(op, TeleopOperator)
    assert op.watch({}, {}) is None
    assert op.watch({}, {}) == "operator takeover"
    np.testing.assert_allclose(op.act({}), [0.5, 0, 0, 1.0])  # the keys after the space
    np.testing.assert_allclose(op.act({}), [0, 0, 0, 1.0])
    np.testing.assert_allclose(op.act({}), [0, -0.25, 0, 1.0])
    assert op.take_over("operator takeover", [{}, {}, {}]) == 2  # no rewind


def test_a_teleop_device_drives_the_rollout_loop(peg_env):
    """A device with only watch/act (here the scripted expert's) takes over a random policy,
    and its steps are the human fragment."""
    from aloe.operators.scripted import OperatorConfig, ScriptedOperator
    from aloe.policies.chunk_policy import RandomPolicy
    from aloe.rollout import EpisodeRecorder, Takeover, play_episode

    expert = ScriptedOperator("peg-insert-side-v3", OperatorConfig(patience=10))
    device = SimpleNamespace(watch=expert.watch, act=expert.act)
    operator = as_operator(device)
    assert as_operator(expert) is expert
    expert.reset(0)
    rec = EpisodeRecorder(record_sim_state=False)
    counts = play_episode(
        peg_env,
        0,
        policy=RandomPolicy(),
        operator=operator,
        takeover=Takeover(operator_max_steps=20),
        recorder=rec,
        label_time_limit=True,
    )
    assert counts.takeovers == 1 and counts.operator_steps > 0
    assert set(rec.cols["source"]) == {"policy", "human"}


def test_paced_steps_wait_for_the_control_period(monkeypatch):
    from aloe.robot import pacing

    waits: list[float] = []
    clock = [100.0]

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr(pacing.time, "sleep", sleep)
    monkeypatch.setattr(pacing.time, "perf_counter", lambda: clock[0])

    def step(action: int) -> int:
        clock[0] += 0.005  # the simulator takes 5 ms of the 20 ms period
        return action

    env = SimpleNamespace(step=step, reset=lambda seed: None, limit=0)
    paced = pacing.Paced(env, hz=50)  # type: ignore[arg-type]
    paced.reset(seed=0)
    for _ in range(3):
        paced.step(1)
    paced.limit = 7
    assert env.limit == 7 and waits == pytest.approx([0.015] * 3)


def test_deadlines_count_an_overrun_and_do_not_rush_after_it(monkeypatch):
    """Steps end on t0 + k / hz; a step late for its deadline (a slow chunk) is counted, and
    the schedule restarts from it instead of catching up with shorter periods."""
    from aloe.robot import pacing

    clock = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr(pacing.time, "sleep", sleep)
    monkeypatch.setattr(pacing.time, "perf_counter", lambda: clock[0])
    deadlines = pacing.Deadlines(hz=10)
    deadlines.restart()
    for work in (0.02, 0.05, 0.25, 0.01, 0.03):  # the third step's work overruns by 0.15 s
        clock[0] += work
        deadlines.wait()
    assert waits == pytest.approx([0.08, 0.05, 0.09, 0.07])
    assert deadlines.overruns == 1 and deadlines.late_s == pytest.approx(0.15)
    assert clock[0] == pytest.approx(0.65)  # 0.45 + two whole periods: no rush


@pytest.mark.parametrize(
    "text, code", [("bad_request: state: wrong", "bad_request"), ("no code here", "error")]
)
def test_server_error_codes(text, code):
    from aloe.robot.connection import ServerError

    assert ServerError(text).code == code

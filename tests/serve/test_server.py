"""The policy server on loopback: inference, policy swaps, security, and hostile input."""

from __future__ import annotations

import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from aloe import checkpoint
from aloe.robot.connection import PLAIN, Connection, ConnectionLost, ServerError
from aloe.serve.server import Options, PolicyServer, Running
from aloe.serve.wire import pack, unpack

STATE = "observation.state"


def good_request(**extra):
    return {STATE: np.zeros(39, np.float32), "prompt": "pick up the puck", **extra}


def raw(url: str, **kwargs):
    ws = connect(url, compression=None, proxy=None, max_size=None, **PLAIN, **kwargs)
    unpack(ws.recv(timeout=30))  # the metadata
    return ws


def ask(ws, message: bytes | str):
    ws.send(message)
    reply = ws.recv(timeout=30)
    return reply if isinstance(reply, str) else unpack(reply)


def test_metadata_then_chunks_with_the_policy_version(server):
    conn = Connection(server.url)
    meta = conn.metadata
    assert meta["server"] == "aloe" and meta["horizon"] == 10 and meta["action_dim"] == 4
    assert meta["policy_version"] == 0 and meta["sim_state_dim"] > 0
    reply = conn.call(good_request())
    assert reply["actions"].shape == (10, 4) and reply["actions"].dtype == np.float32
    assert reply["policy_version"] == 0 and reply["server_timing"]["infer_ms"] > 0
    # LeRobot's `task` names the instruction too; a float64 state is accepted
    assert conn.call({STATE: np.zeros(39), "task": "x"})["actions"].shape == (10, 4)
    conn.close()


def test_an_episode_reseeds_sampling_as_in_process_collection(server, untrained_run):
    """episode_start(seed) makes the chunks those of the run's `chunk_policy` after
    `reset(seed)`: the network collects the very episodes in-process collection would."""
    from aloe.run import load_run

    local = load_run(untrained_run).chunk_policy(seed=0)
    conn = Connection(server.url)
    for seed in (7, 7, 8):
        local.reset(seed)
        conn.call({"type": "episode_start", "instruction": "x", "seed": seed, "record": False})
        obs = {"state": np.linspace(-1, 1, 39).astype(np.float32)}
        for _ in range(2):
            remote = conn.call({STATE: obs["state"]})["actions"]
            np.testing.assert_array_equal(remote, local.act_chunk(obs))
        assert conn.call({"type": "episode_end"})["type"] == "discarded"
    conn.close()


def malformed_messages(rng: np.random.Generator) -> list[bytes | str]:
    """Over a thousand messages a server must refuse, of every kind we could think of."""
    good = pack(good_request())
    out: list[bytes | str] = []
    out += [rng.bytes(int(rng.integers(1, 300))) for _ in range(300)]
    out += [good[: int(rng.integers(1, len(good)))] for _ in range(100)]
    out += [msgpack.packb(x) for x in (1, "x", [1, 2], None, 2.5, b"b", True, [{}], [[]])] * 6
    out += [msgpack.packb({int(k): 1}) for k in rng.integers(0, 100, 20)]
    out += [msgpack.packb({b"bytes": 1}), msgpack.packb({"x": msgpack.ExtType(3, b"p")})] * 10
    out += [b"\x91" * int(n) + b"\xc0" for n in rng.integers(2000, 9000, 20)]
    out += [f"text frame {i}" for i in range(50)]
    for dtype, shape, nbytes in [
        ("|O", [39], 39 * 8),
        (">f4", [39], 156),
        ("<c8", [39], 312),
        ("|V4", [39], 156),
        ("x", [39], 156),
        (5, [39], 156),
        ("<f4", [-39], 156),
        ("<f4", [2**31, 2**31], 8),
        ("<f4", [39], 155),
        ("<f4", [1.5], 4),
        ("<f4", "39", 156),
        ("<f4", [1] * 12, 4),
    ]:
        arr = {b"__ndarray__": True, b"data": b"\0" * nbytes, b"dtype": dtype, b"shape": shape}
        out += [msgpack.packb({STATE: arr, "prompt": "x"})] * 12
    bad_states = [
        np.zeros(38, np.float32),
        np.zeros((39, 1), np.float32),
        np.zeros(0, np.float32),
        np.zeros(39, np.int32),
        np.zeros(39, np.uint8),
        np.zeros(39, bool),
        np.full(39, np.nan, np.float32),
        np.full(39, np.inf),
        np.full(39, 1e30),
        np.zeros(4 * 2**20 + 1, np.uint8)[:0].reshape(0, 0),
    ]
    for state in bad_states:
        out += [pack({STATE: state, "prompt": "x"})] * 15
    out += [pack({"prompt": "no state"})] * 10
    out += [pack(good_request(prompt=p)) for p in (3, None, ["x"], b"x")] * 5
    out += [pack({"type": t}) for t in ("nope", 3, None, "", "INFER", b"step")] * 8
    out += [
        pack(good_request(**{"rtc.prefix": p, "rtc.delay": d}))
        for p, d in [
            (np.zeros((11, 4), np.float32), 0),
            (np.zeros((3, 5), np.float32), 0),
            (np.zeros(4, np.float32), 0),
            (np.zeros((3, 4), np.float32), 4),
            (np.zeros((3, 4), np.float32), -1),
            (np.full((3, 4), np.nan, np.float32), 1),
            (np.zeros((0, 4), np.float32), 0),
            (np.zeros((3, 4), np.float32), "1"),
        ]
    ] * 5
    step = {
        "type": "step",
        STATE: np.zeros(39, np.float32),
        "action": np.zeros(4, np.float32),
        "next.observation.state": np.zeros(39, np.float32),
        "source": "policy",
    }
    out += [
        pack(m)
        for m in (
            step,
            {"type": "label", "outcome": "failure"},
            {"type": "intervention_start"},
            {"type": "intervention_end"},
            {"type": "episode_end"},
        )
    ] * 10  # no episode is open
    out += [pack({"type": "episode_start", "seed": s}) for s in (-1, "3", 2.5, 2**63)] * 5
    return out


def test_fuzz_a_thousand_malformed_messages_then_a_good_request(server):
    messages = malformed_messages(np.random.default_rng(0))
    assert len(messages) >= 1000
    bystander = Connection(server.url)  # another robot, connected all along
    ws = raw(server.url)
    codes = set()
    for message in messages:
        reply = ask(ws, message)
        assert isinstance(reply, str), f"accepted {message[:80]!r}"
        code, _, text = reply.partition(": ")
        assert code in ("bad_message", "bad_request") and text, reply
        codes.add(code)
    assert codes == {"bad_message", "bad_request"}
    assert ask(ws, pack(good_request()))["actions"].shape == (10, 4)  # the same connection
    assert bystander.call(good_request())["actions"].shape == (10, 4)
    # a message over the size limit closes only its own connection (websockets' 1009)
    big = raw(server.url)
    big.send(pack({STATE: np.zeros(17 * 2**20, np.uint8)}))
    with pytest.raises(ConnectionClosed):
        big.recv(timeout=30)
    assert ask(ws, pack(good_request()))["actions"].shape == (10, 4)
    ws.close()
    bystander.close()


def step_message(conn: Connection, **extra) -> dict:
    return {
        "type": "step",
        STATE: np.zeros(39, np.float32),
        "action": np.zeros(4, np.float32),
        "next.observation.state": np.zeros(39, np.float32),
        "sim.state": np.zeros(conn.metadata["sim_state_dim"]),
        **extra,
    }


def start_recording(conn: Connection) -> dict:
    """An episode of the run's instruction and a seed the server assigns."""
    instruction = conn.metadata["instructions"][0]
    return conn.call({"type": "episode_start", "instruction": instruction})


def test_recording_messages_in_the_wrong_order_are_refused(server):
    conn = Connection(server.url, server.server.token)
    step = step_message(conn)
    sim = step["sim.state"]
    start_recording(conn)
    with pytest.raises(ServerError, match="an episode is open") as err:  # the episode goes on
        conn.call({"type": "episode_start"})
    assert err.value.code == "bad_request"
    assert conn.call({**step, "source": "policy"}) == {"type": "ok"}
    assert conn.call({"type": "episode_end", "discard": True})["type"] == "discarded"
    for msg, says in [
        ({**step, "source": "human"}, "intervention_start first"),
        ({"type": "intervention_start"}, "the policy must have acted"),
        ({"type": "label", "outcome": "failure"}, "failure_reason"),
        ({**step, "source": "policy", "outcome": "failure"}, "failure_reason"),
        ({**step, "source": "policy", "sim.state": sim[:-1]}, "sim.state"),
    ]:
        start_recording(conn)
        with pytest.raises(ServerError, match=says) as err:
            conn.call(msg)
        assert err.value.code == "bad_request" and "the episode is discarded" in str(err.value)
        with pytest.raises(ServerError, match="the episode was refused"):  # nothing after it
            conn.call({**step, "source": "policy"})
        with pytest.raises(ServerError, match="the episode was refused") as err:
            conn.call({"type": "episode_end"})
        assert err.value.code == "refused"
    conn.close()


def test_a_connection_lost_mid_episode_stores_nothing(server, untrained_run):
    from aloe.datasets.store import EpisodeStore

    before = EpisodeStore.open(untrained_run / "dataset").num_episodes
    lost = server.server.lost_episodes
    conn = Connection(server.url, server.server.token)
    start_recording(conn)
    conn.call(step_message(conn, source="policy"))
    conn.close()
    deadline = time.time() + 30
    while server.server.lost_episodes == lost and time.time() < deadline:
        time.sleep(0.02)
    assert server.server.lost_episodes == lost + 1
    assert EpisodeStore.open(untrained_run / "dataset").num_episodes == before


def test_a_new_checkpoint_is_swapped_in_without_dropping_connections(untrained_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(untrained_run, run)
    running = Running(PolicyServer(run, Options(poll_s=0.02)))
    try:
        conn = Connection(running.url)
        assert conn.call(good_request())["policy_version"] == 0
        state = checkpoint.load(checkpoint.latest(run / "checkpoints")[1])
        checkpoint.save(run / "checkpoints", 1, state)
        deadline = time.time() + 60
        while conn.call(good_request())["policy_version"] != 1:
            assert time.time() < deadline, "the server never swapped to iteration 1"
            time.sleep(0.02)
        assert Connection(running.url).metadata["policy_version"] == 1
    finally:
        running.stop()


def test_token_deadline_and_a_restarting_server(untrained_run, capsys):
    token = "s3cret-token-of-some-length"
    running = Running(PolicyServer(untrained_run, Options(token=token, deadline_s=1e-6)))
    with pytest.raises(InvalidStatus) as refused:
        raw(running.url, additional_headers={"Authorization": "Api-Key wrong-token-wrong"})
    assert refused.value.response.status_code == 401
    with pytest.raises(ServerError, match="unauthorized"):
        Connection(running.url, "wrong-token-wrong-token")
    conn = Connection(running.url, token, attempts=2, backoff=0.01)
    with pytest.raises(ServerError) as late:  # no chunk is computed within a microsecond
        conn.call(good_request())
    assert late.value.code == "deadline"
    running.stop()  # the server goes away: the client sees it, and reconnecting gives up
    with pytest.raises(ConnectionLost):
        deadline = time.time() + 30
        while time.time() < deadline:
            conn.call(good_request())
            time.sleep(0.05)
    with pytest.raises(ConnectionError, match="no aloe server after 2 attempts"):
        conn.connect()
    assert "retrying in 0.0 s (attempt 1 of 2)" in capsys.readouterr().err


def test_healthz_answers_without_a_token(untrained_run):
    import urllib.request

    running = Running(PolicyServer(untrained_run, Options(token="t" * 16)))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{running.port}/healthz", timeout=30) as r:
            assert r.status == 200 and r.read() == b"OK\n"
    finally:
        running.stop()


def test_eq14_reward_is_the_environments(peg_env):
    from aloe.serve.episodes import eq14_reward

    for success, failed in [(True, False), (False, True), (False, False)]:
        assert eq14_reward(success=success, failed=failed, c_fail=peg_env.c_fail) == peg_env.reward(
            success=success, failed=failed
        )


def test_untrained_run_fixture_is_a_run(untrained_run: Path):
    from aloe.run import require_run_dir

    require_run_dir(untrained_run)

"""Whose data gets into a served run's buffer: the token, origins, fair sharing, and the
rules every recorded episode must pass (`aloe.serve.rules`), against a real server."""

from __future__ import annotations

import os
import shutil
import stat
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from aloe import data as D
from aloe.datasets.store import EpisodeStore
from aloe.robot.connection import PLAIN, Connection, ServerError
from aloe.rollout import EpisodeRecorder, Step
from aloe.serve import auth
from aloe.serve.rules import Bounds, EpisodeRefused, Seeds, check_episode
from aloe.serve.server import Options, PolicyServer, Running
from aloe.serve.wire import unpack

DEMOS = 3


def demo_episode(seed: int, n: int, task: str, instruction: str, sim_dim: int) -> D.Episode:
    """An operator demonstration of iteration 0: states in [-1, 1], actions in [-0.5, 0.5]."""
    rng = np.random.default_rng(seed)
    rec = EpisodeRecorder(record_sim_state=True)
    for t in range(n):
        end = t == n - 1
        rec.add(
            Step(
                obs={"state": rng.uniform(-1, 1, 39).astype(np.float32)},
                action=rng.uniform(-0.5, 0.5, 4).astype(np.float32),
                next_obs={"state": rng.uniform(-1, 1, 39).astype(np.float32)},
                reward=0.0 if end else -1.0,
                terminated=end,
                truncated=False,
                info={"success": end, "failure_reason": ""},
                source="demo",
                version=-1,
                fragment=0,
                chunk_start=False,
                sim_state=np.zeros(sim_dim),
            )
        )
    where = SimpleNamespace(task=task, instruction=instruction)
    return rec.episode(where, {"seed": seed, "iteration": 0, "takeovers": 0})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def demo_run(untrained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The untrained run with three demonstrations (seeds 0, 1, 2) in its store."""
    from aloe.run import load_run

    run = tmp_path_factory.mktemp("guard") / "run"
    shutil.copytree(untrained_run, run)
    obs = load_run(run).obs
    store = EpisodeStore.open(run / "dataset")
    store.append(
        [
            demo_episode(i, 6, obs.tasks[0], obs.instructions[0], store.sim_state_dim or 0)
            for i in range(DEMOS)
        ]
    )
    return run


def step(conn: Connection, state: float = 0.1, **extra: Any) -> dict[str, Any]:
    return {
        "type": "step",
        D.STATE: np.full(39, state, np.float32),
        D.ACTION: np.full(4, 0.2, np.float32),
        D.NEXT_STATE: np.full(39, state, np.float32),
        D.SIM_STATE: np.zeros(conn.metadata["sim_state_dim"]),
        "source": "policy",
        **extra,
    }


def attempt(conn: Connection, messages: list[dict[str, Any]]) -> list[str]:
    """Send every message whatever the replies (as a hostile client would); the errors."""
    errors = []
    for msg in messages:
        try:
            conn.call(msg)
        except ServerError as e:
            errors.append(e.code)
    return errors


def honest_episode(conn: Connection) -> dict[str, Any]:
    """5 policy steps, a takeover, 4 operator steps ending in success: as a robot sends it."""
    instruction = conn.metadata["instructions"][0]
    start = conn.call({"type": "episode_start", "instruction": instruction})
    for t in range(5):
        conn.call(step(conn, 0.1 * t))
    conn.call({"type": "intervention_start", "reason": "takeover: drifted"})
    for t in range(4):
        conn.call(step(conn, -0.1 * t, source="human", outcome="success" if t == 3 else ""))
    return {**conn.call({"type": "episode_end"}), "seed": start["seed"]}


def ws(url: str, **kwargs: Any) -> Any:
    sock = connect(url, compression=None, proxy=None, **PLAIN, **kwargs)
    unpack(sock.recv(timeout=30))  # the metadata
    return sock


def test_fuzz_and_poison_then_an_honest_client(demo_run: Path, capsys: pytest.CaptureFixture):
    """The issue's poisoned episodes, a foreign origin, no token, a wrong token and 20 idle
    websockets are all refused; an honest client is then served, and the store holds the
    demonstrations and its episode only."""
    server = PolicyServer(demo_run, Options(idle_s=1.5, max_per_peer=4))
    running = Running(server)
    url, token = running.url, server.token
    before = EpisodeStore.open(demo_run / "dataset").episodes().to_pylist()
    refused = attempts = 0
    try:
        conn = Connection(url, token)
        instruction, run_seed = conn.metadata["instructions"][0], conn.metadata["seed"]
        start = {"type": "episode_start", "instruction": instruction}
        poisoned = [
            # success at step 2 of 5, then more steps, a failure and another success
            [
                start,
                step(conn),
                step(conn, outcome="success"),
                step(conn),
                step(conn, outcome="failure", failure_reason="x"),
                step(conn, outcome="success"),
                {"type": "episode_end"},
            ],
            [{**start, "seed": before[0]["seed"]}, step(conn, outcome="success")],  # stored seed
            [{**start, "seed": 123_456_789}, step(conn, outcome="success")],  # never assigned
            [{**start, "instruction": "x"}, step(conn, 999_999.0, outcome="success")],
            [start, step(conn, 999_999.0, outcome="success"), {"type": "episode_end"}],
        ]
        for messages in poisoned:
            attempts += 1
            errors = attempt(conn, messages)
            refused += bool(errors) and errors[0] in ("refused", "bad_request")
        assert refused == attempts == 5

        # a web page (even one that knows the token), no token, a wrong token
        for headers in ({}, {"Authorization": f"Api-Key {token}"}):
            attempts += 1
            with pytest.raises(InvalidStatus) as err:
                ws(url, origin="http://evil.example", additional_headers=headers)
            refused += err.value.response.status_code == 403
        attempts += 1
        anonymous = Connection(url)  # inference on loopback needs no token ...
        assert anonymous.call({D.STATE: np.zeros(39, np.float32)})["actions"].shape == (10, 4)
        with pytest.raises(ServerError) as no_token:  # ... recording does
            anonymous.call(start)
        refused += no_token.value.code == "unauthorized"
        anonymous.close()
        attempts += 1
        with pytest.raises(InvalidStatus) as err:
            ws(url, additional_headers={"Authorization": "Api-Key wrong-token-wrong-token"})
        refused += err.value.response.status_code == 401
        conn.close()

        # 20 idle websockets: 4 let in (one peer), the rest refused, the 4 closed when idle
        idle, busy = [], 0
        for _ in range(20):
            attempts += 1
            try:
                idle.append(ws(url, ping_interval=0.2))  # answers pings all along
            except InvalidStatus as e:
                busy += e.response.status_code == 503
        refused += busy
        assert len(idle) == 4 and busy == 16
        for sock in idle:
            with pytest.raises(ConnectionClosed) as closed:
                sock.recv(timeout=30)
            refused += closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        assert refused == attempts == 29

        # an honest robot is served and records its episode
        honest = Connection(url, token)
        assert honest.call({D.STATE: np.zeros(39, np.float32)})["actions"].shape == (10, 4)
        reply = honest_episode(honest)
        assert reply["type"] == "stored" and reply["success"] and reply["length"] == 9
        honest.close()
    finally:
        running.stop()
    store = EpisodeStore.open(demo_run / "dataset")
    rows = store.episodes().to_pylist()
    assert len(rows) == DEMOS + 1 and rows[:DEMOS] == before
    assert store.tasks() == before[0]["tasks"] and store.check() == []
    assert rows[-1]["seed"] == reply["seed"] == D.episode_seed(run_seed, 1, 0)
    frames = store.load_frames()
    last = frames[D.EPISODE] == DEMOS
    want = [0.1 * t for t in range(5)] + [-0.1 * t for t in range(4)]
    np.testing.assert_allclose(frames[D.STATE][last][:, 0], want, rtol=1e-6)
    assert frames[D.SOURCE][last].tolist() == ["policy"] * 5 + ["human"] * 4
    assert frames[D.FRAGMENT][last].tolist() == [0] * 5 + [1] * 4
    assert frames[D.DONE][last].tolist() == [False] * 4 + [True] + [False] * 3 + [True]
    assert frames[D.SUCCESS][last].tolist() == [False] * 8 + [True]
    log = capsys.readouterr().err
    assert log.count("aloe serve: refused an episode from 127.0.0.1: ") == 6


def test_an_episode_over_the_memory_cap_is_refused_not_the_server(demo_run: Path, capsys):
    frame = 39 * 4 * 2 + 4 * 4 + 8 * 0  # the arrays of one step, sim state added below
    server = PolicyServer(demo_run, Options(max_episode_bytes=40 * 2**10))
    running = Running(server)
    try:
        conn = Connection(running.url, server.token)
        frame += 8 * conn.metadata["sim_state_dim"] + 1024  # with STEP_OVERHEAD
        cap = 40 * 2**10 // frame  # steps that fit
        conn.call({"type": "episode_start"})
        for _ in range(cap):
            assert conn.call(step(conn)) == {"type": "ok"}
        with pytest.raises(ServerError, match="more than a connection may") as err:
            conn.call(step(conn))
        assert err.value.code == "refused" and f"({cap + 1} steps of {frame} bytes)" in str(
            err.value
        )
        assert conn.call({"type": "episode_end", "discard": True}) == {"type": "discarded"}
        assert honest_episode(conn)["type"] == "stored"  # the next episode is served
    finally:
        running.stop()
    assert "refused an episode from 127.0.0.1: step " in capsys.readouterr().err


def test_origins_and_peers_at_the_handshake(demo_run: Path):
    options = Options(allow_origins=("https://lab.example",), max_per_peer=2, open_inference=False)
    server = PolicyServer(demo_run, options)
    running = Running(server)
    key = {"Authorization": f"Api-Key {server.token}"}
    try:
        with pytest.raises(InvalidStatus) as err:  # --no-open-inference: the token for all
            ws(running.url)
        assert err.value.response.status_code == 401
        allowed = ws(running.url, origin="https://lab.example", additional_headers=key)
        other = ws(running.url, additional_headers=key)
        with pytest.raises(InvalidStatus) as err:
            ws(running.url, additional_headers=key)
        assert err.value.response.status_code == 503 and b"127.0.0.1" in err.value.response.body
        allowed.close()
        deadline = time.time() + 30
        while True:  # the slot frees when the server sees the close
            try:
                ws(running.url, additional_headers=key).close()
                break
            except InvalidStatus:
                assert time.time() < deadline
                time.sleep(0.05)
        other.close()
    finally:
        running.stop()


def test_the_token_file_is_the_owners_and_aloe_robot_reads_it(demo_run: Path, monkeypatch):
    from aloe.robot.sim import RobotArgs, connect

    monkeypatch.delenv("ALOE_TOKEN", raising=False)
    server = PolicyServer(demo_run, Options())
    path = auth.write_token_file(demo_run, server.token)
    running = Running(server)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert auth.read_token_file(path) == server.token
        conn = connect(RobotArgs(server=running.url))  # finds DIR/serve.token
        assert conn.token == server.token
        assert honest_episode(conn)["type"] == "stored"
        conn.close()
    finally:
        running.stop()
        auth.remove_token_file(path, server.token)
    assert not path.exists()
    assert not auth.matches(f"Api-Key {server.token}x", server.token)
    assert not auth.matches(None, server.token)


def test_bounds_are_the_demonstrations_range_with_the_margin(demo_run: Path):
    store = EpisodeStore.open(demo_run / "dataset")
    frames = store.load_frames()
    demo = frames[D.SOURCE] == "demo"
    frames = {k: v[demo] for k, v in frames.items()}
    states = np.concatenate([frames[D.STATE], frames[D.NEXT_STATE]])
    lo, hi = states.min(0), states.max(0)
    bounds = Bounds.of_store(store, 0.5)
    assert bounds is not None
    pad = 0.5 * (hi - lo).max()  # the widest dimension's range
    np.testing.assert_allclose(bounds.lo[D.STATE], lo - pad, rtol=1e-6)
    np.testing.assert_allclose(bounds.hi[D.NEXT_STATE], hi + pad, rtol=1e-6)
    a_lo, a_hi = frames[D.ACTION].min(0), frames[D.ACTION].max(0)
    np.testing.assert_allclose(bounds.hi[D.ACTION], a_hi + 0.5 * (a_hi - a_lo).max(), rtol=1e-6)
    bounds.check(D.ACTION, bounds.hi[D.ACTION])
    with pytest.raises(EpisodeRefused, match=r"action\[2\] = "):
        bounds.check(D.ACTION, bounds.hi[D.ACTION] * np.array([1, 1, 1.01, 1]))
    assert Bounds.of_store(store, float("inf")) is None


def test_seeds_are_the_runs_and_each_is_used_once():
    seeds = Seeds(run_seed=2, stored=[D.episode_seed(2, 1, 0), None])
    assert seeds.claim(None, iteration=1) == D.episode_seed(2, 1, 1)  # the next free one
    assert seeds.claim(D.episode_seed(2, 0, 7), iteration=1) == D.episode_seed(2, 0, 7)
    for seed, says in [
        (D.episode_seed(2, 1, 0), "already holds"),
        (D.episode_seed(2, 1, 1), "another connection"),
        (D.episode_seed(2, 2, 0), "not one this run assigns"),  # a later iteration's
        (D.episode_seed(1, 1, 0), "not one this run assigns"),  # another run's
    ]:
        with pytest.raises(EpisodeRefused, match=says):
            seeds.claim(seed, iteration=1)
    seeds.release(D.episode_seed(2, 1, 1), stored=True)
    with pytest.raises(EpisodeRefused, match="already holds"):
        seeds.claim(D.episode_seed(2, 1, 1), iteration=1)
    seeds.release(D.episode_seed(2, 0, 7))
    assert seeds.claim(D.episode_seed(2, 0, 7), iteration=1) == D.episode_seed(2, 0, 7)


def test_outcomes_only_where_the_rollout_puts_them():
    ep = demo_episode(0, 4, "t", "do it", 1)
    check_episode(ep, ["do it"], None)
    with pytest.raises(EpisodeRefused, match="instruction"):
        check_episode(ep, ["other"], None)
    cases = [
        (D.SUCCESS, 1, True, "has an outcome but is not its fragment's last step"),
        (D.DONE, 3, False, "fragment 0 ends without outcome"),
        (D.FRAGMENT, 2, 2, "fragments must count up"),
    ]
    for column, t, value, says in cases:
        broken = demo_episode(0, 4, "t", "do it", 1)
        broken.steps[column][t] = value
        if column == D.DONE:
            broken.steps[D.SUCCESS][t] = False
        with pytest.raises(EpisodeRefused, match=says):
            check_episode(broken, ["do it"], None)
    early = demo_episode(0, 4, "t", "do it", 1)
    early.steps[D.FRAGMENT][2:] = 1  # success ends fragment 0, and fragment 1 follows
    early.steps[D.SUCCESS][1] = early.steps[D.DONE][1] = True
    with pytest.raises(EpisodeRefused, match="succeeds before the end"):
        check_episode(early, ["do it"], None)


@pytest.mark.slow
def test_aloe_serve_makes_prints_and_removes_its_token(demo_run: Path):
    """As Jupyter does: a token made at start, printed, written 0600 into the run, removed
    at exit; recording with it works, and without it is refused."""
    import re
    import signal
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "ALOE_TOKEN"}
    cmd = [sys.executable, "-m", "aloe.cli", "serve", "--run", str(demo_run), "--port", "0"]
    # SIGINT as a terminal's foreground command has it (a run started in the background hands
    # its children SIGINT ignored)
    proc = subprocess.Popen(
        cmd,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stderr is not None
    try:
        first, second = proc.stderr.readline(), proc.stderr.readline()
        url = re.search(r"on (ws://\S+);", first)
        assert url is not None, first + second + proc.stderr.read()
        assert f"recording needs the token in {demo_run / auth.TOKEN_FILE} (mode 0600" in first
        token = second.strip().removeprefix("aloe serve: the token is ALOE_TOKEN=")
        path = demo_run / auth.TOKEN_FILE
        assert auth.read_token_file(path) == token and stat.S_IMODE(path.stat().st_mode) == 0o600
        with pytest.raises(ServerError, match="unauthorized: recording needs"):
            Connection(url[1]).call({"type": "episode_start"})
        conn = Connection(url[1], token)
        assert conn.call({"type": "episode_start"})["seed"] is not None
        conn.close()
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 130
    assert not (demo_run / auth.TOKEN_FILE).exists()


def test_a_new_token_never_starts_with_a_dash(monkeypatch):
    """`aloe robot --token T` would read a T that starts with "-" as an option: such a draw
    is drawn again."""
    draws = iter(["-" + "a" * 42, "b" * 43])
    monkeypatch.setattr(auth.secrets, "token_urlsafe", lambda n: next(draws))
    assert auth.new_token() == "b" * 43

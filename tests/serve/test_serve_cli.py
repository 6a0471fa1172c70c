"""`aloe serve` and `aloe robot` refuse bad input before any work: one line on stderr naming
the value, exit 2, and nothing created or changed."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import pytest

from aloe.cli import main


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(f"{path.relative_to(root)}\0".encode() + path.read_bytes())
    return h.hexdigest()


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


TOKEN = "a-token-long-enough-1234"


@pytest.mark.parametrize(
    "args, line",
    [
        (
            "--run {missing}",
            "aloe serve: error: --run ({missing}): does not exist; give a run "
            "directory written by `aloe train`",
        ),
        ("--run {run} --port 70000", "aloe serve: error: --port (70000): must be in 0..65535"),
        (
            "--run {run} --host 0.0.0.0",
            "aloe serve: error: --host ('0.0.0.0'): is not a loopback "
            "address: give --token (or $ALOE_TOKEN) to serve beyond this machine",
        ),
        (
            "--run {run} --host robot-lab.local",
            "aloe serve: error: --host ('robot-lab.local'): is "
            "not a loopback address: give --token (or $ALOE_TOKEN) to serve beyond this machine",
        ),
        (
            "--run {run} --host 0.0.0.0 --token short",
            "aloe serve: error: --token ('***'): must be 16 to 512 characters",
        ),
        (
            "--run {run} --token ééééééééééééééééé",
            "aloe serve: error: --token ('***'): must be printable ASCII without spaces",
        ),
        (
            "--run {run} --token=-abcdefghijklmnopq",
            "aloe serve: error: --token ('***'): must not start with \"-\" (a command line "
            "reads it as an option)",
        ),
        (
            "--run {run} --idle-timeout 0",
            "aloe serve: error: --idle-timeout (0.0): must be a finite number > 0",
        ),
        (
            "--run {run} --max-episode-mb inf",
            "aloe serve: error: --max-episode-mb (inf): must be a finite number > 0",
        ),
        (
            "--run {run} --max-connections-per-peer 0",
            "aloe serve: error: --max-connections-per-peer (0): must be >= 1",
        ),
        (
            "--run {run} --bounds-margin -1",
            "aloe serve: error: --bounds-margin (-1.0): must be a number >= 0 (inf: no bounds)",
        ),
        (
            "--run {run} --bounds-margin nan",
            "aloe serve: error: --bounds-margin (nan): must be a number >= 0 (inf: no bounds)",
        ),
        (
            "--run {run} --allow-origin lab.example",
            "aloe serve: error: --allow-origin ('lab.example'): must be a web origin, "
            "scheme://host[:port], e.g. https://lab.example",
        ),
        (
            "--run {run} --deadline 0",
            "aloe serve: error: --deadline (0.0): must be a finite number > 0",
        ),
        (
            "--run {run} --heartbeat inf",
            "aloe serve: error: --heartbeat (inf): must be a finite number > 0",
        ),
        ("--run {run} --poll -1", "aloe serve: error: --poll (-1.0): must be a finite number > 0"),
        (
            "--run {run} --max-message-mb 0",
            "aloe serve: error: --max-message-mb (0.0): must be a finite number > 0",
        ),
        (
            "--run {run} --max-connections 0",
            "aloe serve: error: --max-connections (0): must be >= 1",
        ),
        (
            "--run {empty}",
            "aloe serve: error: --run ({empty}): not a run directory (no config.json); "
            "give a run directory written by `aloe train`",
        ),
    ],
)
def test_serve_refuses(args, line, untrained_run, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ALOE_TOKEN", raising=False)
    (tmp_path / "empty").mkdir()
    where = {"run": untrained_run, "missing": tmp_path / "missing", "empty": tmp_path / "empty"}
    before = _digest(untrained_run)
    argv = ["serve", *args.format(**where).split()]
    assert _error(capsys, argv) == line.format(**where)
    assert _digest(untrained_run) == before and not (tmp_path / "missing").exists()


def test_serve_refuses_a_taken_port(untrained_run, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = _error(capsys, ["serve", "--run", str(untrained_run), "--port", str(port)])
    assert line.startswith(f"aloe serve: error: --port ({port}): cannot listen on 127.0.0.1: ")


@pytest.mark.parametrize(
    "args, line",
    [
        (
            "--server http://x:1",
            "aloe robot: error: --server ('http://x:1'): must be ws://HOST:PORT or wss://HOST:PORT",
        ),
        (
            "--server ws://",
            "aloe robot: error: --server ('ws://'): must be ws://HOST:PORT or wss://HOST:PORT",
        ),
        ("--episodes -1", "aloe robot: error: --episodes (-1): must be >= 0 (0 = the run's rule)"),
        (
            "--steps-ahead -2",
            "aloe robot: error: --steps-ahead (-2): must be >= 0 (0 = from the measured latency)",
        ),
        ("--hz nan", "aloe robot: error: --hz (nan): must be a finite rate >= 0 (0 = unpaced)"),
        (
            "--timeout 0",
            "aloe robot: error: --timeout (0.0): must be a finite number of seconds > 0",
        ),
        ("--attempts 0", "aloe robot: error: --attempts (0): must be >= 1"),
        (
            "--token-file /nonexistent/serve.token",
            "aloe robot: error: --token-file (/nonexistent/serve.token): cannot read a token: "
            "[Errno 2] No such file or directory: '/nonexistent/serve.token'",
        ),
        (
            "--lerobot-teleop type=so101_leader",
            "aloe robot: error: --lerobot-teleop ('type=so101_leader'): needs --lerobot-robot: "
            "a LeRobot teleoperator corrects a LeRobot robot",
        ),
        (
            "--rtc --mode sync",
            "aloe robot: error: --rtc (True): needs --mode async: synchronous "
            "execution has no queued actions to agree with",
        ),
    ],
)
def test_robot_refuses(args, line, capsys, monkeypatch):
    monkeypatch.delenv("ALOE_TOKEN", raising=False)
    assert _error(capsys, ["robot", *args.split()]) == line


def test_robot_names_an_unreachable_server(capsys):
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    url = f"ws://127.0.0.1:{port}"
    line = _error(capsys, ["robot", "--server", url, "--attempts", "1"])
    assert line.startswith(
        f"aloe robot: error: --server ('{url}'): {url}: no aloe server after 1 attempts ("
    )
    assert line.endswith("is `aloe serve` running there?")


def test_robot_names_a_refused_token(server, capsys):
    from aloe.serve.server import Options, PolicyServer, Running

    running = Running(PolicyServer(server.server.root, Options(token=TOKEN)))
    try:
        line = _error(capsys, ["robot", "--server", running.url, "--token", "x" * 20])
    finally:
        running.stop()
    assert line == (
        f"aloe robot: error: --token ('***'): unauthorized: {running.url} refused the "
        "token (give the server's --token)"
    )

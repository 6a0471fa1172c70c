"""`aloe serve --run DIR`: the run's policy over openpi's websocket protocol."""

from __future__ import annotations

import asyncio
import ipaddress
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from aloe.errors import bad, require

MIN_TOKEN = 16  # characters: a guessable token is no protection


@dataclass
class ServeArgs:
    """Serve a run's policy to robots (openpi's protocol) and record their episodes."""

    run: Path
    """Run directory written by `aloe train`: its latest checkpoint is served, newer ones as
    they are published, and recorded episodes grow its dataset/."""
    host: str = "127.0.0.1"
    """Address to listen on. Anything but loopback needs --token."""
    port: int = 8000
    """TCP port (0: any free port, printed at start)."""
    token: str | None = None
    """Clients must send `Authorization: Api-Key <token>` (openpi's header); default
    $ALOE_TOKEN. At least 16 characters."""
    deadline: float = 10.0
    """Seconds one inference may take before the request is answered with an error."""
    heartbeat: float = 10.0
    """Seconds between pings; a client silent for as long again is disconnected."""
    poll: float = 1.0
    """Seconds between looks at DIR/checkpoints for a newer policy."""
    max_connections: int = 16
    """Connections served at once; more are refused (HTTP 503)."""
    max_message_mb: float = 16.0
    """Largest message accepted, in MiB; a larger one closes its connection (code 1009)."""

    def validate(self) -> str | None:
        """Every flag, then the run directory; returns the token to require."""
        from aloe.run import require_run_dir

        token = self.token if self.token is not None else os.environ.get("ALOE_TOKEN")
        require(0 <= self.port <= 65535, "--port", self.port, "must be in 0..65535")
        for flag, value in (
            ("--deadline", self.deadline),
            ("--heartbeat", self.heartbeat),
            ("--poll", self.poll),
            ("--max-message-mb", self.max_message_mb),
        ):
            require(math.isfinite(value) and value > 0, flag, value, "must be a finite number > 0")
        require(
            self.max_connections >= 1, "--max-connections", self.max_connections, "must be >= 1"
        )
        require(
            token is None or len(token) >= MIN_TOKEN,
            "--token",
            "***",
            f"must be at least {MIN_TOKEN} characters",
        )
        require(
            token is not None or is_loopback(self.host),
            "--host",
            self.host,
            "is not a loopback address: give --token (or $ALOE_TOKEN) to serve beyond this machine",
        )
        require_run_dir(self.run, "--run")
        return token


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def cmd_serve(args: ServeArgs) -> int:
    from aloe.serve.server import Options, PolicyServer
    from aloe.serve.wire import Limits

    token = args.validate()
    limits = Limits(max_message_bytes=int(args.max_message_mb * 2**20))
    options = Options(
        token=token,
        deadline_s=args.deadline,
        heartbeat_s=args.heartbeat,
        poll_s=args.poll,
        max_connections=args.max_connections,
        limits=limits,
    )
    server = PolicyServer(args.run, options)

    def ready(ws_server: object) -> None:
        port = next(iter(ws_server.sockets)).getsockname()[1]  # type: ignore[attr-defined]
        print(
            f"aloe serve: {args.run} iteration {server.version} on ws://{args.host}:{port}"
            f"{' (token required)' if token else ''}; Ctrl-C stops",
            file=sys.stderr,
        )

    try:
        asyncio.run(server.serve(args.host, args.port, ready))
    except OSError as e:  # the address is taken or not this machine's
        raise bad("--port", args.port, f"cannot listen on {args.host}: {e.strerror or e}") from None
    except KeyboardInterrupt:
        return 130
    return 0

"""`aloe serve --run DIR`: the run's policy over openpi's websocket protocol."""

from __future__ import annotations

import asyncio
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from aloe.errors import bad, require
from aloe.run import require_run_dir
from aloe.serve.auth import (
    MIN_TOKEN,
    TOKEN_FILE,
    is_loopback,
    remove_token_file,
    token_problem,
    write_token_file,
)

__all__ = ["MIN_TOKEN", "ServeArgs", "cmd_serve", "is_loopback"]


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
    """Clients send `Authorization: Api-Key <token>` (openpi's header); default
    $ALOE_TOKEN, else one is generated and printed. It is written to DIR/serve.token
    (mode 0600), where `aloe robot` finds it. Recording always needs it; inference needs it
    beyond loopback (see --open-inference). At least 16 characters."""
    open_inference: bool = True
    """On loopback, serve inference to clients without a token (openpi's clients send none
    by default); recording still needs it. --no-open-inference: the token for everything."""
    allow_origin: tuple[str, ...] = ()
    """Web page origins (e.g. https://lab.example) that may connect; any other request
    with an Origin header (a browser) is refused (HTTP 403)."""
    deadline: float = 10.0
    """Seconds one inference may take before the request is answered with an error."""
    heartbeat: float = 10.0
    """Seconds between pings; a client silent for as long again is disconnected."""
    idle_timeout: float = 60.0
    """Seconds a connection may send no message (pings do not count) before it is closed."""
    poll: float = 1.0
    """Seconds between looks at DIR/checkpoints for a newer policy."""
    max_connections: int = 16
    """Connections served at once; more are refused (HTTP 503)."""
    max_connections_per_peer: int = 4
    """Connections from one address; more are refused (HTTP 503). Every process of this
    machine is one peer on loopback."""
    max_message_mb: float = 16.0
    """Largest message accepted, in MiB; a larger one closes its connection (code 1009)."""
    max_episode_mb: float = 64.0
    """MiB an open recorded episode may hold per connection: steps × (their arrays' bytes:
    states, actions, images, sim state + 1 KiB); a longer episode is refused and discarded.
    64 MiB holds ~4 000 MetaWorld steps with a 64x64 camera; raise it for large images.
    The server's worst case is this × --max-connections."""
    bounds_margin: float = 1.0
    """Recorded states and actions must lie within the demonstrations' range per dimension,
    widened on each side by this × the widest dimension's range (inf: no bounds)."""
    best_of_n: int | None = None
    """Chunks sampled per inference in one batch, the one the run's critic ranks highest
    sent (an ALOE run; `aloe.best_of_n_reduce` ranks); default: the run's aloe.best_of_n;
    1 = plain sampling."""

    def validate(self) -> str | None:
        """Every flag, then the run directory; returns the token to require."""
        token = self.token if self.token is not None else os.environ.get("ALOE_TOKEN")
        require(0 <= self.port <= 65535, "--port", self.port, "must be in 0..65535")
        for flag, value in (
            ("--deadline", self.deadline),
            ("--heartbeat", self.heartbeat),
            ("--idle-timeout", self.idle_timeout),
            ("--poll", self.poll),
            ("--max-message-mb", self.max_message_mb),
            ("--max-episode-mb", self.max_episode_mb),
        ):
            require(math.isfinite(value) and value > 0, flag, value, "must be a finite number > 0")
        for flag, count in (
            ("--max-connections", self.max_connections),
            ("--max-connections-per-peer", self.max_connections_per_peer),
        ):
            require(count >= 1, flag, count, "must be >= 1")
        require(
            self.best_of_n is None or self.best_of_n >= 1,
            "--best-of-n",
            self.best_of_n,
            "must be >= 1 (1 = plain sampling)",
        )
        require(
            self.bounds_margin >= 0,  # nan fails too
            "--bounds-margin",
            self.bounds_margin,
            "must be a number >= 0 (inf: no bounds)",
        )
        for origin in self.allow_origin:
            require(
                origin.startswith(("http://", "https://")) and "/" not in origin.split("//")[1],
                "--allow-origin",
                origin,
                "must be a web origin, scheme://host[:port], e.g. https://lab.example",
            )
        problem = token_problem(token) if token is not None else None
        require(problem is None, "--token", "***", problem or "")
        require(
            token is not None or is_loopback(self.host),
            "--host",
            self.host,
            "is not a loopback address: give --token (or $ALOE_TOKEN) to serve beyond this machine",
        )
        require_run_dir(self.run, "--run")
        return token


def cmd_serve(args: ServeArgs) -> int:
    # optional extra: serve (websockets, msgpack); `aloe serve --help` and the checks run without it
    from aloe.serve.server import Options, PolicyServer
    from aloe.serve.wire import Limits

    token = args.validate()
    limits = Limits(max_message_bytes=int(args.max_message_mb * 2**20))
    options = Options(
        token=token,
        open_inference=args.open_inference,
        allow_origins=tuple(args.allow_origin),
        deadline_s=args.deadline,
        heartbeat_s=args.heartbeat,
        idle_s=args.idle_timeout,
        poll_s=args.poll,
        max_connections=args.max_connections,
        max_per_peer=args.max_connections_per_peer,
        max_episode_bytes=int(args.max_episode_mb * 2**20),
        bounds_margin=args.bounds_margin,
        best_of_n=args.best_of_n,
        limits=limits,
    )
    server = PolicyServer(args.run, options)
    try:
        token_file = write_token_file(args.run, server.token)
    except OSError as e:
        raise bad("--run", args.run, f"cannot write its {TOKEN_FILE}: {e}") from None

    def ready(ws_server: object) -> None:
        port = next(iter(ws_server.sockets)).getsockname()[1]  # type: ignore[attr-defined]
        print(
            f"aloe serve: {args.run} iteration {server.version} on ws://{args.host}:{port}; "
            f"recording needs the token in {token_file} (mode 0600; aloe robot reads it)"
            f"{'' if server.open_inference else ', inference too'}; Ctrl-C stops",
            file=sys.stderr,
        )
        if token is None:  # made here: say it, as Jupyter does
            print(f"aloe serve: the token is ALOE_TOKEN={server.token}", file=sys.stderr)
        if server.bounds is None:
            print(
                "aloe serve: recorded states and actions are not bounded (no episode in the "
                "store yet, or --bounds-margin inf)",
                file=sys.stderr,
            )

    try:
        asyncio.run(server.serve(args.host, args.port, ready))
    except OSError as e:  # the address is taken or not this machine's
        raise bad("--port", args.port, f"cannot listen on {args.host}: {e.strerror or e}") from None
    except KeyboardInterrupt:
        return 130
    finally:
        remove_token_file(token_file, server.token)
    return 0

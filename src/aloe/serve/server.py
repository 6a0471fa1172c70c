"""The websocket policy server behind `aloe serve` (protocol: `aloe.serve.protocol`).

Safe by default: it binds loopback unless told otherwise, and any other address needs a
token (openpi's `Authorization: Api-Key <token>` header, compared in constant time;
`aloe.serve.auth`). Recording (episode_start with `record`, and the reports after it) needs
the token on loopback too; plain inference on loopback does not, so that openpi's clients,
which send no token by default, work as they are (`Options.open_inference`). A request that
carries a wrong token, or an `Origin` header (a web page) not in `Options.allow_origins`,
is refused at the handshake.

A message is bounded before it is read (websockets' `max_size`) and while it is decoded
(`aloe.serve.wire.Limits`); inference has a deadline; websocket pings find a dead peer and
a session that sends nothing for `idle_s` is closed, pings or not; one peer (address) holds
at most `max_per_peer` connections; an open episode at most `max_episode_bytes`. Every
malformed or hostile message gets an error reply on its own connection, which stays open;
nothing a client sends reaches the other connections or stops the server.

A recorded episode is checked as it arrives and again before it is stored
(`aloe.serve.rules`); any refused report discards the episode whole, with an error reply
and one line on stderr naming the peer and the reason.

Inference runs in a worker thread, one at a time (one model), so the event loop keeps
answering pings, recording messages and other clients while a chunk is computed. A task
polls the checkpoints directory and swaps the policy in place (`aloe.serve.policy`).
"""

from __future__ import annotations

import asyncio
import http
import itertools
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from aloe.collect import CollectStats
from aloe.serve import auth
from aloe.serve import protocol as P
from aloe.serve.episodes import RemoteEpisode
from aloe.serve.policy import Published, ServedPolicy, failure_costs, open_store, spec_of
from aloe.serve.rules import Bounds, EpisodeRefused, Seeds, check_episode
from aloe.serve.wire import Limits, WireError, pack, unpack

RECORDING = ("step", "label", "intervention_start", "intervention_end")
IDLE_CLOSE = 1008  # policy violation: the session sent nothing for too long


@dataclass(frozen=True)
class Options:
    """How the server guards itself (`aloe serve`'s flags)."""

    token: str | None = None  # needed to record (None: one is made, `PolicyServer.token`)
    open_inference: bool = True  # on loopback, inference needs no token (openpi's clients)
    allow_origins: tuple[str, ...] = ()  # web pages (Origin headers) that may connect
    deadline_s: float = 10.0  # per inference request
    heartbeat_s: float = 10.0  # ping interval; a peer silent for as long again is dropped
    idle_s: float = 60.0  # a session that sends no message for this long is closed
    poll_s: float = 1.0  # checkpoint directory polling period
    max_connections: int = 16
    max_per_peer: int = 4  # connections from one address (all local processes are one)
    max_episode_bytes: int = 64 * 2**20  # an open episode's frames, per connection
    bounds_margin: float = 1.0  # demo range ± this × the widest range (`rules.Bounds`; inf: none)
    best_of_n: int | None = (
        None  # chunks sampled per inference, the critic's best sent; None: the run's
    )
    limits: Limits = Limits()


class Session:
    """One connection's state: its sampling generator and the episode it is in, if any."""

    def __init__(self, number: int, peer: str, authorized: bool) -> None:
        self.number = number
        self.peer = peer
        self.authorized = authorized
        self.policy: ServedPolicy | None = None  # pinned from episode_start to episode_end
        self.generator: torch.Generator | None = None
        self.episode: RemoteEpisode | None = None
        self.refused = ""  # why the open episode was discarded, if it was


class PolicyServer:
    """A run served over websockets: inference, policy swaps and episode recording."""

    def __init__(self, run_dir: Path, options: Options = Options()) -> None:
        self.root, self.options = Path(run_dir), options
        self.token = options.token or auth.new_token()
        self.published = Published(self.root, options.best_of_n)
        self.store = open_store(self.root)
        self.spec = spec_of(self.published.current, self.store)
        self.c_fail = failure_costs(self.published.current)
        self.tasks = dict(
            zip(
                self.published.current.run.obs.instructions,
                self.published.current.run.obs.tasks,
                strict=True,
            )
        )
        self.bounds = Bounds.of_store(self.store, options.bounds_margin)
        self.seeds = Seeds(
            self.published.current.run.config.seed, self.store.episodes()["seed"].to_pylist()
        )
        self._infer_lock = threading.Lock()  # one model: chunks are computed one at a time
        self._store_lock = threading.Lock()
        self._numbers = itertools.count()
        self.connections: set[ServerConnection] = set()  # from the handshake until closed
        self._watchers: set[asyncio.Task[None]] = set()
        self.open_inference = False  # set by `serve`: only ever on loopback
        self.lost_episodes = self.refused_episodes = 0

    @property
    def version(self) -> int:
        return self.published.current.version

    # --- the websocket side ----------------------------------------------------------------

    async def serve(self, host: str, port: int, ready: Any = None) -> None:
        """Serve until cancelled; `ready(server)` is called once it listens."""
        self.open_inference = self.options.open_inference and auth.is_loopback(host)
        async with serve(
            self.handle,
            host,
            port,
            process_request=self.process_request,
            compression=None,
            max_size=self.options.limits.max_message_bytes,
            max_queue=4,
            ping_interval=self.options.heartbeat_s,
            ping_timeout=self.options.heartbeat_s,
        ) as server:
            if ready is not None:
                ready(server)
            await self.watch_checkpoints()

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """The HTTP handshake: `/healthz` answers OK; then the origin, the token and the caps."""
        if request.path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        refusal = self._refusal(connection, request)
        if refusal is not None:
            return connection.respond(*refusal)
        self.connections.add(connection)  # counted from now: handshakes run concurrently
        watcher = asyncio.get_running_loop().create_task(self._forget(connection))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        return None

    def _refusal(
        self, connection: ServerConnection, request: Request
    ) -> tuple[http.HTTPStatus, str] | None:
        origin = request.headers.get("Origin")
        if origin is not None and origin not in self.options.allow_origins:
            return (
                http.HTTPStatus.FORBIDDEN,
                f"forbidden: origin {origin[:100]!r} (web pages may not connect; "
                "aloe serve --allow-origin)\n",
            )
        header = request.headers.get("Authorization")
        anonymous = header is None and self.open_inference  # may infer, not record
        if not anonymous and not auth.matches(header, self.token):
            return (
                http.HTTPStatus.UNAUTHORIZED,
                "unauthorized: send the header 'Authorization: Api-Key <token>'\n",
            )
        if len(self.connections) >= self.options.max_connections:
            return (
                http.HTTPStatus.SERVICE_UNAVAILABLE,
                f"busy: {len(self.connections)} connections open (aloe serve --max-connections)\n",
            )
        peer = _peer(connection)
        mine = sum(_peer(c) == peer for c in self.connections)
        if mine >= self.options.max_per_peer:
            return (
                http.HTTPStatus.SERVICE_UNAVAILABLE,
                f"busy: {mine} connections open from {peer} "
                "(aloe serve --max-connections-per-peer)\n",
            )
        return None

    async def _forget(self, connection: ServerConnection) -> None:
        await connection.wait_closed()
        self.connections.discard(connection)

    async def handle(self, ws: ServerConnection) -> None:
        header = ws.request.headers.get("Authorization") if ws.request is not None else None
        authorized = auth.matches(header, self.token)
        session = Session(next(self._numbers), _peer(ws), authorized)
        idle = self.options.idle_s
        try:
            await ws.send(pack(self.metadata()))
            while True:
                try:
                    message = await asyncio.wait_for(ws.recv(), idle)
                except TimeoutError:
                    await ws.close(IDLE_CLOSE, f"idle: no message for {idle:g} s")
                    break
                await ws.send(await self.answer(session, message))
        except ConnectionClosed:
            pass
        finally:
            self.connections.discard(ws)
            self._release(session)
            if session.episode is not None:  # documented: a dropped episode is lost whole
                self.lost_episodes += 1
                print(
                    f"aloe serve: connection {session.number} closed mid-episode; its "
                    f"{len(session.episode)} steps were not stored",
                    file=sys.stderr,
                )

    async def answer(self, session: Session, message: bytes | str) -> bytes | str:
        """The reply to one message: its answer, or an error text frame."""
        try:
            if isinstance(message, str):
                raise WireError("text frames are not accepted: send msgpack in binary frames")
            msg = unpack(message, self.options.limits)
            return pack(await self.dispatch(session, P.kind(msg), msg))
        except WireError as e:
            return P.error_text("bad_message", str(e))
        except P.ProtocolError as e:
            return P.error_text(e.code, str(e))
        except Exception as e:  # a bug: say so, keep serving
            traceback.print_exc(file=sys.stderr)
            return P.error_text("internal", f"{type(e).__name__}: {e}"[:500])

    async def watch_checkpoints(self) -> None:
        while True:
            await asyncio.sleep(self.options.poll_s)
            newer = await asyncio.to_thread(self.published.poll)
            if newer is not None:
                self.published.current = newer
                print(f"aloe serve: now serving iteration {newer.version}", file=sys.stderr)

    def metadata(self) -> dict[str, Any]:
        policy = self.published.current
        cfg = policy.run.config
        done = CollectStats.from_store(self.store, iteration=policy.version + 1)
        extra = {
            "exec_horizon": cfg.exec_horizon,
            "iteration": policy.version + 1,
            "seed": cfg.seed,
            "collected": {"episodes": done.episodes, "successes": done.successes},
            "config": cfg.to_json(),  # the run's config, for a simulated robot to mirror
            "fps": self.store.fps,  # the store's frame rate: a real robot's control rate
            # the robot's units of aloe's -1 and +1 per action value (aloe.envs.robot_spec)
            "action_units": cfg.env.robot.units(self.spec.action_dim).metadata(),
            "max_message_bytes": self.options.limits.max_message_bytes,
            "max_episode_bytes": self.options.max_episode_bytes,
            "deadline_s": self.options.deadline_s,
            "idle_s": self.options.idle_s,
            "run_dir": str(self.root.resolve()),  # where `aloe robot` finds the token file
        }
        return P.metadata(self.spec, policy.version, extra)

    # --- the messages ----------------------------------------------------------------------

    async def dispatch(self, s: Session, kind: str, msg: dict[str, Any]) -> dict[str, Any]:
        if kind == "infer":
            return await self.infer(s, msg)
        if kind == "episode_start":
            return self.episode_start(s, msg)
        if kind == "episode_end":
            return await self.episode_end(s, msg)
        ep = s.episode
        if ep is None:
            if s.refused:
                raise EpisodeRefused(f"{kind}: the episode was refused ({s.refused}); end it")
            raise P.refuse(f"{kind}: no recorded episode is open; send episode_start first")
        try:
            if kind == "step":
                ep.step(P.step(msg, self.spec, ep.instruction))
            elif kind == "label":
                ep.label(*P.label(msg))
            elif kind == "intervention_start":
                ep.intervention_start(P.text(msg, "reason", "operator takeover") or "takeover")
            else:
                ep.intervention_end()
        except P.ProtocolError as e:  # an episode with a refused report is not stored
            raise self._refuse(s, e) from None
        return {"type": "ok"}

    def _refuse(self, s: Session, e: P.ProtocolError) -> P.ProtocolError:
        """Discard `s`'s episode for `e`; say so on stderr and in the error reply."""
        self._release(s)
        s.episode, s.refused = None, str(e)
        self.refused_episodes += 1
        print(f"aloe serve: refused an episode from {s.peer}: {e}", file=sys.stderr)
        return P.ProtocolError(e.code, f"{e}; the episode is discarded, nothing of it is stored")

    def _release(self, s: Session) -> None:
        if s.episode is not None:
            self.seeds.release(s.episode.seed)

    async def infer(self, s: Session, msg: dict[str, Any]) -> dict[str, Any]:
        obs = P.observation(msg, self.spec, P.read_instruction(msg, self.spec, ("prompt", "task")))
        rtc = P.rtc(msg, self.spec)
        policy = s.policy or self.published.current
        if s.generator is None:
            s.generator = policy.rng(2**40 + s.number)  # never an episode's seed
        start = time.perf_counter()
        try:
            chunk = await asyncio.wait_for(
                asyncio.to_thread(self._infer, policy, obs, s.generator, rtc),
                self.options.deadline_s,
            )
        except TimeoutError:
            raise P.ProtocolError(
                "deadline", f"no chunk within {self.options.deadline_s} s"
            ) from None
        return {
            "actions": np.asarray(chunk, dtype=np.float32),
            "policy_version": policy.version,
            "server_timing": {"infer_ms": 1e3 * (time.perf_counter() - start)},
        }

    def _infer(
        self,
        policy: ServedPolicy,
        obs: dict[str, Any],
        gen: torch.Generator,
        rtc: tuple[np.ndarray, int] | None,
    ) -> np.ndarray:
        with self._infer_lock:
            try:
                return policy.infer(obs, gen, rtc)
            except ValueError as e:  # what the run's observation builder refuses
                raise P.refuse(str(e)) from None

    def episode_start(self, s: Session, msg: dict[str, Any]) -> dict[str, Any]:
        if s.policy is not None:
            raise P.refuse("episode_start: an episode is open; send episode_end first")
        text = P.read_instruction(msg, self.spec, ("instruction", "prompt", "task"))
        seed = P.episode_seed(msg)
        record = P.flag(msg, "record", True)
        policy = self.published.current
        if record:
            try:
                seed = self._admit(s, text, seed, policy.version + 1)
            except EpisodeRefused as e:
                self.refused_episodes += 1
                print(f"aloe serve: refused an episode from {s.peer}: {e}", file=sys.stderr)
                raise
        s.policy = policy
        s.refused = ""
        s.generator = policy.rng(seed if seed is not None else 2**40 + s.number)
        if record:
            s.episode = RemoteEpisode(
                task=self.tasks[text],
                instruction=text,
                seed=seed,
                version=policy.version,
                c_fail=self.c_fail[text],
                record_sim_state=self.spec.sim_state_dim is not None,
                bounds=self.bounds,
                max_bytes=self.options.max_episode_bytes,
            )
        return {
            "type": "episode",
            "policy_version": policy.version,
            "iteration": policy.version + 1,
            "seed": seed,
        }

    def _admit(self, s: Session, text: str, seed: int | None, iteration: int) -> int:
        """The seed of a recording `s` may open (reserved until it ends), or EpisodeRefused."""
        if not s.authorized:
            raise EpisodeRefused(
                "recording needs the server's token: send 'Authorization: Api-Key <token>' "
                "(aloe serve printed it and wrote it to RUN/serve.token; aloe robot reads "
                "$ALOE_TOKEN or --token-file)",
                code="unauthorized",
            )
        if text not in self.tasks:
            raise EpisodeRefused(
                f"instruction ({text[:60]!r}): not one of this run's {list(self.tasks)}; "
                "a new task cannot be recorded over the network"
            )
        return self.seeds.claim(seed, iteration)

    async def episode_end(self, s: Session, msg: dict[str, Any]) -> dict[str, Any]:
        if s.policy is None:
            raise P.refuse("episode_end: no episode is open")
        discard = P.flag(msg, "discard", False)
        ep, s.policy, refused = s.episode, None, s.refused
        s.refused = ""
        if ep is None and refused and not discard:
            raise EpisodeRefused(f"episode_end: the episode was refused ({refused})")
        if ep is None or discard:
            self._release(s)
            s.episode = None
            return {"type": "discarded"}
        try:
            episode = ep.episode()
            check_episode(episode, self.tasks, self.bounds)
        except P.ProtocolError as e:
            raise self._refuse(s, e) from None
        s.episode = None
        try:
            (index,) = await asyncio.to_thread(self._append, episode)
        except BaseException:  # not stored (a full disk): the seed is free again
            self.seeds.release(ep.seed)
            raise
        self.seeds.release(ep.seed, stored=True)
        return {
            "type": "stored",
            "episode_index": index,
            "length": len(episode),
            "success": episode.success,
        }

    def _append(self, episode: Any) -> list[int]:
        with self._store_lock:
            return self.store.append(episode)


def _peer(connection: ServerConnection) -> str:
    """The connection's remote address (its host, without the port)."""
    address = connection.remote_address
    return str(address[0]) if isinstance(address, tuple | list) and address else str(address)


class Running:
    """A server on an event loop of its own thread (tests, benchmarks, notebooks)."""

    def __init__(self, server: PolicyServer, host: str = "127.0.0.1", port: int = 0) -> None:
        self.server = server
        self.host = host
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self.port = port
        self._thread = threading.Thread(target=self._run, args=(port,), daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the server did not start listening within 30 s")
        if self._error is not None:
            raise self._error

    def _run(self, port: int) -> None:
        def ready(ws_server: Server) -> None:
            self.port = next(iter(ws_server.sockets)).getsockname()[1]
            self._ready.set()

        self._task = self._loop.create_task(self.server.serve(self.host, port, ready))
        try:
            self._loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        except BaseException as e:  # a bind error: hand it to the starting thread
            self._error = e
            self._ready.set()

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def stop(self) -> None:
        if self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(30)

"""The robot's side of `aloe serve`: a `ChunkPolicy` computed remotely, run asynchronously.

`RobotClient.episode` plays one episode with aloe's one rollout loop (`aloe.rollout.
play_episode`) on the robot's environment, the remote policy and the operator (any
`aloe.operators.base.Operator`, or a teleop device through `aloe.robot.teleop`), and
streams what happens to the server, which stores the episode as in-process collection does.

Asynchronous execution: the robot executes a chunk's first e actions while the next chunk
is computed. When d actions of the current chunk are left, the client sends the current
observation; the reply's first d actions are the ones still executed meanwhile, so the robot
continues at action d of the new chunk. d ("steps ahead") is the measured round trip in
control steps, plus one, at most min(e, h − e); a chunk that has not arrived when the queue
runs out is waited for: that wait is the robot's idle time. With `rtc`, the request carries
the current chunk's remaining actions and the server inpaints the new chunk to agree with
them (`aloe.policies.rtc`), so the switch does not jerk. Synchronous execution asks for a
chunk when the last one is used up and idles for every round trip.

The first chunk of each policy fragment is fetched synchronously: after a takeover the
world has moved on and a chunk computed before it is of no use.
"""

from __future__ import annotations

import contextlib
import math
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from aloe import data as D
from aloe.envs.base import EpisodeEnv, Obs
from aloe.operators.base import Operator
from aloe.robot.connection import Connection
from aloe.rollout import Counts, Step, Takeover, play_episode
from aloe.serve.protocol import RTC_DELAY, RTC_PREFIX


@dataclass
class Timing:
    """What the robot waited for, over the client's lifetime (or since `reset_timing`)."""

    round_trips_s: list[float] = field(default_factory=list)  # per chunk request
    idle_s: float = 0.0  # blocked in act_chunk, the robot standing still
    chunks: int = 0

    def summary(self) -> dict[str, float]:
        rtt = np.asarray(self.round_trips_s) * 1e3
        pct = (lambda q: float(np.percentile(rtt, q))) if len(rtt) else (lambda q: math.nan)
        return {
            "chunks": self.chunks,
            "rtt_p50_ms": pct(50),
            "rtt_p99_ms": pct(99),
            "idle_s": self.idle_s,
        }


class Played(NamedTuple):
    counts: Counts
    episode_index: int | None  # where the server stored it (None: not recorded)
    wall_s: float  # robot time of the episode
    idle_s: float  # of which waiting for chunks


class RobotClient:
    """A `ChunkPolicy` whose chunks come from `aloe serve` (see the module docstring)."""

    def __init__(
        self,
        conn: Connection,
        *,
        asynchronous: bool = True,
        rtc: bool = False,
        steps_ahead: int | None = None,
        exec_horizon: int | None = None,
    ) -> None:
        meta = conn.metadata
        self.conn = conn
        self.version = int(meta.get("policy_version", 0))
        self.horizon = int(meta["horizon"])
        self.exec_horizon = int(exec_horizon or meta.get("exec_horizon") or self.horizon)
        self.asynchronous = asynchronous
        self.rtc = rtc
        self.steps_ahead = steps_ahead
        self.timing = Timing()
        self._env: EpisodeEnv | None = None
        self._seed: int | None = None
        self._record = True
        self._started = False
        self._period = 0.0  # seconds per control step (an average)
        self._last_step = 0.0
        self._control = "policy"
        self._chunk = np.zeros((0, 0), np.float32)  # the chunk being executed
        self._offset = self._queued = self._steps = 0
        self._pending: tuple[Future[dict[str, Any]], int] | None = None  # (reply, sent at step)
        self._drop_queue()

    # --- episodes --------------------------------------------------------------------------

    def episode(
        self,
        env: EpisodeEnv,
        seed: int,
        *,
        operator: Operator | None = None,
        takeover: Takeover | None = None,
        record: bool = True,
        demo: bool = False,
    ) -> Played:
        """One episode from the seeded reset: the policy with `operator` watching (or the
        operator's demonstration, `demo`), recorded in the server's store with `record`."""
        self._env = env
        self._seed = seed
        self._record = record
        self._started = False
        recorder = RemoteRecorder(self) if record else None
        start = time.perf_counter()
        idle = self.timing.idle_s
        try:
            counts = play_episode(
                Clocked(env, self),
                seed,
                policy=None if demo else self,
                operator=operator,
                takeover=takeover,
                recorder=recorder,
                label_time_limit=record,
            )
            if recorder is not None:
                recorder.flush()
            reply = self.conn.call({"type": "episode_end"})
        except BaseException:
            self._abandon()
            raise
        self._started = False
        return Played(
            counts,
            reply.get("episode_index"),
            time.perf_counter() - start,
            self.timing.idle_s - idle,
        )

    def start(self, instruction: str) -> None:
        """Open the episode on the server: it reseeds sampling and pins the policy version."""
        msg = {
            "type": "episode_start",
            "instruction": instruction,
            "seed": self._seed,
            "record": self._record,
        }
        self.version = int(self.conn.call(msg)["policy_version"])
        self._started = True

    def _abandon(self) -> None:
        """An episode that failed on the way: the server drops it (if it can still hear us)."""
        if self._started and self.conn.connected:
            with contextlib.suppress(Exception):
                self.conn.call({"type": "episode_end", "discard": True})
        self._started = False

    # --- ChunkPolicy -----------------------------------------------------------------------

    def reset(self, seed: int) -> None:
        self._drop_queue()
        assert self._env is not None, "RobotClient plays episodes through `episode`"
        self.start(self._env.instruction)

    def act_chunk(self, obs: Obs) -> np.ndarray:
        """The next e actions to execute (e = exec_horizon)."""
        if self._pending is not None:
            future, sent_step = self._pending
            chunk = self._receive(future)
            start = min(self._steps - sent_step, self.horizon - 1)
        else:
            chunk = self._receive(self._request(obs))
            start = 0
        self._chunk = chunk
        self._offset = start
        self._pending = None
        actions = chunk[start : start + self.exec_horizon]
        self._queued = len(actions)
        self._prefetch(obs)
        return actions

    # --- the clock (`Clocked` calls these) -------------------------------------------------

    def stepped(self, obs: Obs) -> None:
        now = time.perf_counter()
        if self._last_step:
            self._period = (
                0.9 * self._period + 0.1 * (now - self._last_step)
                if self._period
                else now - self._last_step
            )
        self._last_step = now
        if self._control != "policy":
            return
        self._steps += 1
        if self._queued:
            self._queued -= 1
            self._offset += 1
        self._prefetch(obs)

    def handed_to(self, actor: str) -> None:
        self._control = actor
        self._drop_queue()

    # --- requests --------------------------------------------------------------------------

    def ahead(self) -> int:
        """d: request the next chunk when this many actions of the current one are left."""
        limit = max(1, min(self.exec_horizon, self.horizon - self.exec_horizon))
        if self.steps_ahead:
            return min(self.steps_ahead, limit)
        recent = self.timing.round_trips_s[-20:]
        if not recent or not self._period:
            return limit
        return max(1, min(limit, math.ceil(max(recent) / self._period) + 1))

    def _prefetch(self, obs: Obs) -> None:
        if self.asynchronous and self._pending is None and 0 < self._queued <= self.ahead():
            prefix = self._chunk[self._offset :] if self.rtc else None
            self._pending = (self._request(obs, prefix, delay=self._queued), self._steps)

    def _request(
        self, obs: Obs, prefix: np.ndarray | None = None, delay: int = 0
    ) -> Future[dict[str, Any]]:
        msg: dict[str, Any] = {
            D.STATE: np.asarray(obs["state"], np.float32),
            "prompt": obs.get("instruction", ""),
        }
        for camera, image in obs.get("images", {}).items():
            msg[D.image_key(camera)] = np.asarray(image, np.uint8)
        if prefix is not None:
            msg[RTC_PREFIX], msg[RTC_DELAY] = np.asarray(prefix, np.float32), delay
        sent_at = time.perf_counter()
        future = self.conn.submit(msg)
        # stamped on arrival (in the reader thread), not when the robot gets round to it
        trips = self.timing.round_trips_s
        future.add_done_callback(lambda _: trips.append(time.perf_counter() - sent_at))
        return future

    def _receive(self, future: Future[dict[str, Any]]) -> np.ndarray:
        waited = time.perf_counter()
        reply = self.conn.wait(future)
        self.timing.idle_s += time.perf_counter() - waited
        self.timing.chunks += 1
        chunk = np.asarray(reply.get("actions"))
        if chunk.ndim != 2 or len(chunk) != self.horizon or chunk.dtype.kind != "f":
            raise RuntimeError(
                f"{self.conn.url}: a reply without an (h={self.horizon}, A) "
                f"float 'actions' chunk: {chunk.dtype} {chunk.shape}"
            )
        return chunk.astype(np.float32, copy=False)

    def _drop_queue(self) -> None:
        """Forget the current chunk and any request in flight (its reply is ignored)."""
        self._chunk = np.zeros((0, 0), np.float32)
        self._offset = self._queued = self._steps = 0
        self._pending = None


class Clocked:
    """The robot's environment, telling the client of every step and change of control."""

    def __init__(self, env: EpisodeEnv, client: RobotClient) -> None:
        object.__setattr__(self, "_env", env)
        object.__setattr__(self, "_client", client)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)

    def __setattr__(self, name: str, value: Any) -> None:  # the rollout sets env.limit
        setattr(self._env, name, value)

    def step(self, action: np.ndarray) -> tuple[Obs, float, bool, bool, dict[str, Any]]:
        out = self._env.step(action)
        self._client.stepped(out[0])
        return out

    def hand_to(self, actor: str) -> None:
        self._env.hand_to(actor)
        self._client.handed_to(actor)


class RemoteRecorder:
    """The rollout's `Recorder`, streaming each step and relabel to the server.

    The rollout relabels a fragment's last step after the fact; the relabel is sent with
    what follows it: before a human step it is `intervention_start` (the takeover), before a
    policy step `intervention_end` (the handback), otherwise a plain `label`.
    """

    def __init__(self, client: RobotClient) -> None:
        self.client = client
        self.record_sim_state = client.conn.metadata.get("sim_state_dim") is not None
        self._relabel: tuple[bool, str] | None = None
        self._sent: list[Future[dict[str, Any]]] = []

    def add(self, step: Step) -> None:
        if not self.client._started:  # a demonstration: no policy reset opened the episode
            self.client.start(step.obs.get("instruction", ""))
        if self._relabel is not None:
            self._send(self._relabel_message(step.source))
        self._send(step_message(step))

    def relabel_end(self, *, reward: float, done: bool, truncated: bool, reason: str) -> None:
        self._relabel = (done, reason)

    def _relabel_message(self, next_source: str | None) -> dict[str, Any]:
        assert self._relabel is not None
        done, reason = self._relabel
        self._relabel = None
        if done and next_source == "human":
            return {"type": "intervention_start", "reason": reason}
        if not done and next_source == "policy":
            return {"type": "intervention_end"}
        return {
            "type": "label",
            "outcome": "failure" if done else "truncated",
            "failure_reason": reason if done else "",
        }

    def flush(self) -> None:
        """Send a last relabel and wait until the server has taken every report."""
        if self._relabel is not None:
            self._send(self._relabel_message(None))
        for future in self._sent:
            self.client.conn.wait(future)
        self._sent.clear()

    def _send(self, msg: dict[str, Any]) -> None:
        self._sent.append(self.client.conn.submit(msg))
        while self._sent and self._sent[0].done():  # fail fast on a refused report
            self._sent.pop(0).result()


def step_message(step: Step) -> dict[str, Any]:
    """A rollout step as the protocol's `step` report."""
    info = step.info
    reason = str(info.get("failure_reason") or "")
    outcome = (
        "success"
        if info.get("success")
        else "failure"
        if reason
        else "truncated"
        if step.truncated
        else ""
    )
    msg: dict[str, Any] = {
        "type": "step",
        D.STATE: np.asarray(step.obs["state"], np.float32),
        D.ACTION: np.asarray(step.action, np.float32),
        D.NEXT_STATE: np.asarray(step.next_obs["state"], np.float32),
        "source": step.source,
        "outcome": outcome,
        "failure_reason": reason if outcome == "failure" else "",
    }
    for camera, image in step.obs.get("images", {}).items():
        msg[D.image_key(camera)] = np.asarray(image, np.uint8)
    if step.sim_state is not None:
        msg[D.SIM_STATE] = np.asarray(step.sim_state, np.float64)
    return msg

"""The robot's websocket to `aloe serve` (or any openpi server): requests, replies, reconnects.

Requests are pipelined: `submit` sends at once and returns a future; one reader thread
matches the replies, which come in order, to the futures. A step report therefore costs
the control loop a send, not a round trip, and an inference request waits only for its own
reply. Websocket pings detect a dead server; a request unanswered within `timeout` closes
the connection (a late reply could no longer be matched) and fails with `TimeoutError`.

`connect` retries with exponential back-off, saying on stderr what failed and when it tries
again, and gives up with a `ConnectionError` naming the server and the last failure. A
refused token (HTTP 401) or origin (403) is not retried; a busy server (503) is. This module needs only websockets, msgpack and numpy.
"""

from __future__ import annotations

import inspect
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from aloe.serve.wire import DEFAULT_LIMITS, Limits, WireError, pack, unpack

# websockets >= 16 wants `legacy=True` to hand back a plain connection outside a `with`
PLAIN = {"legacy": True} if "legacy" in inspect.signature(connect).parameters else {}
_connect: Any = connect  # its overloads differ between websockets versions


class ServerError(RuntimeError):
    """An error reply: `code` (bad_message, bad_request, deadline, unauthorized, refused,
    internal; `aloe.serve.protocol`) and its text."""

    def __init__(self, text: str) -> None:
        code, _, message = text.partition(": ")
        super().__init__(text)
        self.code, self.message = (code, message) if message else ("error", text)


class ConnectionLost(ConnectionError):
    """The connection closed under a request; what was in flight (an episode) is lost."""


class Connection:
    """One websocket; `metadata` is what the server sent on connect."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        heartbeat: float = 10.0,
        attempts: int = 6,
        backoff: float = 0.5,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.url = url
        self.token = token
        self.timeout = timeout
        self.heartbeat = heartbeat
        self.attempts = attempts
        self.backoff = backoff
        self.limits = limits
        self._lock = threading.Lock()
        self._pending: deque[Future[dict[str, Any]]] = deque()
        self._ws: ClientConnection | None = None
        self.metadata: dict[str, Any] = {}
        self.reconnects = -1
        self.connect()

    def connect(self) -> None:
        """(Re)open the connection, backing off between failed attempts."""
        self.close()
        delay = self.backoff
        last = ""
        for attempt in range(1, self.attempts + 1):
            try:
                self._open()
                self.reconnects += 1
                return
            except InvalidStatus as e:
                status = e.response.status_code
                if status == 401:
                    what = "refused the token" if self.token else "needs a token"
                    raise ServerError(
                        f"unauthorized: {self.url} {what} (give the server's --token)"
                    ) from None
                if status == 403:
                    raise ServerError(f"forbidden: {self.url} refused this client") from None
                last = f"HTTP {status}"
            except (OSError, TimeoutError, WireError, ConnectionClosed) as e:
                last = f"{type(e).__name__}: {e}"
            if attempt < self.attempts:
                print(
                    f"aloe robot: cannot reach {self.url} ({last}); retrying in {delay:.1f} s "
                    f"(attempt {attempt} of {self.attempts})",
                    file=sys.stderr,
                )
                time.sleep(delay)
                delay = min(2 * delay, 30.0)
        raise ConnectionError(f"{self.url}: no aloe server after {self.attempts} attempts ({last})")

    def _open(self) -> None:
        headers = {"Authorization": f"Api-Key {self.token}"} if self.token else None
        ws: ClientConnection = _connect(
            self.url,
            additional_headers=headers,
            compression=None,
            proxy=None,
            max_size=self.limits.max_message_bytes,
            open_timeout=self.timeout,
            ping_interval=self.heartbeat,
            ping_timeout=self.heartbeat,
            **PLAIN,
        )
        try:
            first = ws.recv(timeout=self.timeout)
            if isinstance(first, str):
                raise WireError(f"the server's metadata is a text frame: {first[:200]}")
            self.metadata = unpack(first, self.limits)
        except BaseException:
            ws.close()
            raise
        self._ws = ws
        threading.Thread(target=self._read, args=(ws,), daemon=True).start()

    def _read(self, ws: ClientConnection) -> None:
        try:
            for data in ws:
                if not self._pending:  # nothing asked for it: a server that is not aloe's
                    continue
                future = self._pending.popleft()
                if isinstance(data, str):
                    future.set_exception(ServerError(data))
                else:
                    try:
                        future.set_result(unpack(data, self.limits))
                    except WireError as e:
                        future.set_exception(e)
        except ConnectionClosed:
            pass
        finally:
            self._fail_pending(ws)

    def _fail_pending(self, ws: ClientConnection) -> None:
        with self._lock:
            if self._ws is ws:
                self._ws = None
            while self._pending:
                code = ws.close_code
                self._pending.popleft().set_exception(
                    ConnectionLost(
                        f"{self.url}: connection closed (code {code}); the request was not answered"
                    )
                )

    def submit(self, msg: dict[str, Any]) -> Future[dict[str, Any]]:
        """Send `msg` now; its reply (or ServerError / ConnectionLost) comes in the future."""
        future: Future[dict[str, Any]] = Future()
        with self._lock:
            if self._ws is None:
                raise ConnectionLost(f"{self.url}: not connected (the connection was lost)")
            self._pending.append(future)
            try:
                self._ws.send(pack(msg))
            except ConnectionClosed as e:
                self._pending.pop()
                raise ConnectionLost(f"{self.url}: connection closed ({e})") from None
        return future

    def wait(self, future: Future[dict[str, Any]]) -> dict[str, Any]:
        """A submitted request's reply, within `timeout` (else the connection is closed)."""
        try:
            return future.result(self.timeout)
        except TimeoutError:
            self.close()
            raise TimeoutError(
                f"{self.url}: no reply within {self.timeout} s; the connection "
                "was closed (call connect() to reconnect)"
            ) from None

    def call(self, msg: dict[str, Any]) -> dict[str, Any]:
        return self.wait(self.submit(msg))

    @property
    def connected(self) -> bool:
        return self._ws is not None

    def close(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            ws.close()

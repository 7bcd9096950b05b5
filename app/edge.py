"""The gateway's HTTP connections: uvicorn's httptools protocol with limits it lacks.

uvicorn closes a keep-alive connection that stays idle after a response, but nothing else:
a connection that never sends a complete request head is kept forever, and every new one is
accepted until the process runs out of file descriptors. Measured with 21,000 idle sockets
before this module: at 20,000 descriptors (the machine's limit) every new client, ``/health``
included, was reset, with nothing logged. With it: 4,096 held, the others answered 503, and
``/health`` answered 200 again once the header timeout had closed the idle ones.
:class:`GatewayProtocol` adds:

- a **request-head deadline** (``gateway.header_timeout_seconds``): from the moment a
  connection opens, and from the first byte of each later request on a kept-alive one, until
  the head is complete. A connection that misses it is closed (with a 408 if a head had begun);
- a **connection cap** (``gateway.max_connections``): beyond it a new connection is answered
  ``503`` and closed at once, before it is read, so it costs a file descriptor for a moment;
- a **request cap** (``gateway.max_requests``, requests being served at once): beyond it a
  request is answered ``503`` and its connection closed; ``GET /health`` is exempt. uvicorn's
  own ``limit_concurrency`` counts idle connections too, answers in plain text and logs a
  line per refusal; it is not used;
- a connection whose response is complete while its request body is still arriving is
  closed, instead of reading the rest of the body for as long as the client trickles it;
- a response's head and body leave in **one write** (:class:`_OneWrite`): uvicorn writes them
  in two, each a send and a wake-up of the client.

The body itself is bounded by the application (``read_body``: ``gateway.body_timeout_seconds``,
408). Refusals and timeouts are counted in ``SERVER_STATS`` (exported by ``GET /metrics``) and
logged at most once per :data:`LOG_EVERY_SECONDS` per kind, with the count since the last line.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from http import HTTPStatus

from loguru import logger
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.metrics import SERVER_STATS, ServerStats
from core.settings import Settings

LOG_EVERY_SECONDS = 10.0
RETRY_AFTER_SECONDS = 1


@dataclass(frozen=True)
class EdgeLimits:
    header_timeout: float
    max_connections: int
    max_requests: int

    @classmethod
    def from_settings(cls, settings: Settings, max_connections: int | None = None) -> EdgeLimits:
        gateway = settings.gateway
        return cls(
            header_timeout=float(gateway.header_timeout_seconds),
            max_connections=max_connections or int(gateway.max_connections),
            max_requests=int(gateway.max_requests),
        )


def _answer(status: int, detail: str, reason: str) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Headers and body of an error in the API's shape; the connection closes after it."""
    body = json.dumps({"detail": detail, "reason": reason}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    if status == HTTPStatus.SERVICE_UNAVAILABLE:
        headers.append((b"retry-after", str(RETRY_AFTER_SECONDS).encode()))
    return headers, body


def _raw(status: int, detail: str, reason: str) -> bytes:
    """The same answer as bytes, written straight to a transport."""
    headers, body = _answer(status, detail, reason)
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}".encode()]
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class _Throttled:
    """Log a kind of event at once, then at most once per interval with the count since.

    Called on the event loop only (protocol callbacks); a burst of 2,000 timeouts is two lines.
    """

    def __init__(self, level: str, message: str, every: float = LOG_EVERY_SECONDS):
        self.level, self.message, self.every = level, message, every
        self.unlogged = 0
        self.fields: dict = {}
        self.window: asyncio.TimerHandle | None = None  # set while lines are being held back

    def __call__(self, **fields) -> None:
        self.unlogged += 1
        self.fields = fields
        if self.window is None:
            self._flush()

    def _flush(self) -> None:
        if not self.unlogged:
            self.window = None
            return
        logger.log(self.level, self.message, count=self.unlogged, **self.fields)
        self.unlogged = 0
        self.window = asyncio.get_running_loop().call_later(self.every, self._flush)


class GatewayProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the deadlines and caps above (one per connection)."""

    def __init__(self, *args, limits: EdgeLimits, stats: ServerStats = SERVER_STATS, **kwargs):
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.stats = stats
        self.served_app = self.app
        self.head_timer: asyncio.TimerHandle | None = None
        self.in_head = False  # a request head has begun and is not complete

    # -- the connection ----------------------------------------------------------------
    def connection_made(self, transport) -> None:
        if len(self.connections) >= self.limits.max_connections:
            transport.write(REFUSED_CONNECTION)  # not registered: nothing to undo later
            transport.close()
            self.stats.refused["max_connections"] += 1
            _log_refused_connection(limit=self.limits.max_connections)
            return
        super().connection_made(transport)
        self.stats.open += 1
        self.head_timer = self.loop.call_later(self.limits.header_timeout, self._head_too_slow)

    def connection_lost(self, exc) -> None:
        if self.flow is None:  # refused in connection_made
            return
        self.stats.open -= 1
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # The common case, a whole head in one read, arms no timer: only a head left
        # incomplete by this read does (the first request's runs since connection_made).
        if self.in_head and self.head_timer is None and not self.transport.is_closing():
            self.head_timer = self.loop.call_later(self.limits.header_timeout, self._head_too_slow)

    # -- parser callbacks --------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.in_head = True

    def on_headers_complete(self) -> None:
        self.in_head = False
        self._stop_head_timer()
        if len(self.tasks) >= self.limits.max_requests and not _is_health(self.url):
            self.stats.refused["max_requests"] += 1
            _log_refused_request(limit=self.limits.max_requests)
            self.app = _overloaded  # read by the parent for this request only
            try:
                super().on_headers_complete()
            finally:
                self.app = self.served_app
            return
        before = self.cycle
        super().on_headers_complete()
        if self.cycle is not before:  # a new request (not an upgrade uvicorn took over)
            self.cycle.transport = _OneWrite(self.transport, self.loop)
            if self.scope["method"] == "POST":
                self.stats.posts += 1

    def on_response_complete(self) -> None:
        if self.cycle is not None and self.cycle.more_body and not self.transport.is_closing():
            # Answered before its body arrived (413, 408, a route that reads no body): stop
            # here rather than read the rest of the body for as long as the client sends it.
            self.transport.close()
            return
        super().on_response_complete()

    # -- timers ------------------------------------------------------------------------
    def _stop_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_too_slow(self) -> None:
        self.head_timer = None
        if self.transport.is_closing():
            return
        if self.in_head:
            self.transport.write(HEAD_TIMEOUT)
        self.transport.close()
        self.stats.timed_out["request_head"] += 1
        _log_head_timeout(seconds=self.limits.header_timeout)

    def _unsupported_upgrade_warning(self) -> None:
        # uvicorn logs two warnings per request that asks for an upgrade (WebSocket, h2c);
        # the request is served as plain HTTP. Once per interval is enough.
        _log_upgrade()

    def timeout_keep_alive_handler(self) -> None:
        if not self.transport.is_closing():
            self.stats.timed_out["keep_alive"] += 1
        super().timeout_keep_alive_handler()


class _OneWrite:
    """A request's transport that holds the response head until its body is written, so a
    response that is not streamed leaves in one write: one send and one wake-up of the client
    where uvicorn makes two (async submits at 16 connections on the 2-core VM, same run:
    1,835 -> 2,038 req/s). A head whose body does not follow in the same turn of the event
    loop (a streamed response, HEAD) goes at the end of the turn; anything else is written
    at once."""

    __slots__ = ("head", "loop", "transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self.transport, self.loop = transport, loop
        self.head: bytes | None = None

    def write(self, data: bytes) -> None:
        if self.head is not None:
            data, self.head = self.head + data, None
        elif data.startswith(b"HTTP/1.1 ") and not data.startswith(b"HTTP/1.1 1"):
            self.head = data  # 1xx (100 Continue) goes at once: the client waits for it
            self.loop.call_soon(self.flush)
            return
        self.transport.write(data)

    def flush(self) -> None:
        if self.head is not None:
            head, self.head = self.head, None
            if not self.transport.is_closing():
                self.transport.write(head)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()


def _is_health(url: bytes) -> bool:
    return url == b"/health" or url.startswith(b"/health?")


REFUSED_CONNECTION = _raw(
    503,
    "the gateway is at its limit of open connections (gateway.max_connections); retry later",
    "overloaded",
)
HEAD_TIMEOUT = _raw(
    408, "the request head was not complete within gateway.header_timeout_seconds", "timeout"
)
_OVERLOADED_HEADERS, _OVERLOADED_BODY = _answer(
    503,
    "the gateway is at its limit of requests in progress (gateway.max_requests); retry later",
    "overloaded",
)


async def _overloaded(scope, receive, send) -> None:
    """The ASGI answer to a request beyond ``gateway.max_requests`` (connection: close)."""
    await send({"type": "http.response.start", "status": 503, "headers": _OVERLOADED_HEADERS})
    await send({"type": "http.response.body", "body": _OVERLOADED_BODY})


_log_refused_connection = _Throttled(
    "WARNING",
    "refused {count} connection(s) with 503: {limit} connections are open "
    "(gateway.max_connections); put a reverse proxy in front or raise the limit",
)
_log_refused_request = _Throttled(
    "WARNING",
    "refused {count} request(s) with 503: {limit} requests are in progress (gateway.max_requests)",
)
_log_head_timeout = _Throttled(
    "INFO",
    "closed {count} connection(s) that sent no complete request head within {seconds:g} s "
    "(gateway.header_timeout_seconds)",
)
_log_upgrade = _Throttled(
    "INFO", "served {count} request(s) asking for a protocol upgrade as plain HTTP (no WebSocket)"
)

"""The pieces of app/edge.py that need no server. The connection limits themselves are tested
on the real server: tests/integration/test_edge.py."""

from __future__ import annotations

import asyncio

from app import edge
from app.metrics import ServerStats


def test_refusals_are_logged_at_once_then_once_per_interval_with_the_count(log_lines):
    throttled = edge._Throttled("WARNING", "refused {count} ({limit})", every=0.2)

    async def burst():
        for _ in range(500):
            throttled(limit=7)
        await asyncio.sleep(0.3)  # the window closes: one line for the 499 held back
        await asyncio.sleep(0.3)  # a quiet window ends the throttling
        throttled(limit=7)

    asyncio.run(burst())
    assert [line["message"] for line in log_lines] == [
        "refused 1 (7)",
        "refused 499 (7)",
        "refused 1 (7)",
    ]


class _Transport:
    """What uvicorn's protocol needs of a transport; records every write."""

    def __init__(self):
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 8000) if name in ("sockname", "peername") else default

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


def _connect(app, transport: _Transport, stats: ServerStats | None = None) -> edge.GatewayProtocol:
    """A connection of the gateway's protocol (uvicorn's, as the server makes it)."""
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    config = Config(app=app, ws="none", log_config=None, access_log=False, lifespan="off")
    config.load()
    protocol = edge.GatewayProtocol(
        config=config,
        server_state=ServerState(),
        app_state={},
        limits=edge.EdgeLimits(header_timeout=5, max_connections=10, max_requests=10),
        **({} if stats is None else {"stats": stats}),
    )
    protocol.connection_made(transport)
    return protocol


async def _answer_ok(scope, receive, send) -> None:
    await receive()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


def test_a_response_leaves_in_one_write_head_and_body_together():
    async def run() -> list[bytes]:
        transport = _Transport()
        protocol = _connect(_answer_ok, transport)
        protocol.data_received(b"POST /x HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\n{}")
        await asyncio.sleep(0.05)
        protocol.connection_lost(None)
        return transport.writes

    writes = asyncio.run(run())
    assert len(writes) == 1
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and writes[0].endswith(b"\r\n\r\nok")


def test_post_requests_are_counted_as_their_heads_are_read():
    async def run() -> int:
        stats = ServerStats()
        for request in (
            b"POST /x HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\n{}",
            b"GET /x HTTP/1.1\r\nhost: t\r\n\r\n",
            b"POST /x HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\n",  # body to come
        ):
            protocol = _connect(_answer_ok, _Transport(), stats)
            protocol.data_received(request)
            await asyncio.sleep(0.01)
            protocol.connection_lost(None)
        return stats.posts

    assert asyncio.run(run()) == 2


def test_a_head_whose_body_comes_later_goes_at_the_end_of_the_turn():
    transport = _Transport()
    seen: list[list[bytes]] = []

    async def streamed(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(0)  # the turn ends: the head goes, though the body has not come
        seen.append(list(transport.writes))
        await asyncio.sleep(0.005)
        await send({"type": "http.response.body", "body": b"late"})

    async def run() -> None:
        protocol = _connect(streamed, transport)
        protocol.data_received(b"GET /s HTTP/1.1\r\nhost: t\r\n\r\n")
        await asyncio.sleep(0.05)
        protocol.connection_lost(None)

    asyncio.run(run())
    assert len(seen[0]) == 1 and seen[0][0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert len(transport.writes) == 2 and b"late" in transport.writes[1]


def test_100_continue_is_written_at_once_and_close_sends_a_held_head():
    loop = asyncio.new_event_loop()
    try:
        transport = _Transport()
        one = edge._OneWrite(transport, loop)
        one.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        assert transport.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
        one.write(b"HTTP/1.1 500 Internal Server Error\r\n\r\n")
        assert len(transport.writes) == 1  # held for its body
        one.close()
        assert transport.writes[-1].startswith(b"HTTP/1.1 500") and transport.closed
    finally:
        loop.close()

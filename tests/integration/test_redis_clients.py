"""core/redis.py: after Redis restarts, the clients' pools drop the connections it closed
instead of failing a command on each of them (the gateway answered those with 503)."""

from __future__ import annotations

import asyncio
import time

import pytest

from core.redis import async_client, sync_client

pytestmark = pytest.mark.integration

CONNECTIONS = 8


def restart(server) -> None:
    server.stop()
    server.start()
    time.sleep(0.5)  # the old connections' end of stream reaches the clients' sockets


def test_the_async_pool_reconnects_every_connection_redis_closed(redis_server):
    async def scenario() -> list:
        client = async_client(redis_server.url)
        try:
            await asyncio.gather(*(client.set(f"k{i}", i) for i in range(CONNECTIONS)))
            assert len(client.connection_pool._available_connections) == CONNECTIONS
            await asyncio.to_thread(restart, redis_server)
            return await asyncio.gather(
                *(client.get(f"k{i}") for i in range(CONNECTIONS)), return_exceptions=True
            )
        finally:
            await client.aclose()

    answers = asyncio.run(scenario())
    assert answers == [None] * CONNECTIONS  # no error; the data went with the restart


def test_the_sync_pool_reconnects_every_connection_redis_closed(redis_server):
    client = sync_client(redis_server.url)

    def ping_on_every_connection() -> list:
        held = [client.connection_pool.get_connection() for _ in range(CONNECTIONS)]
        try:
            for connection in held:
                connection.send_command("PING")
            return [connection.read_response() for connection in held]
        finally:
            for connection in held:
                client.connection_pool.release(connection)

    try:
        assert ping_on_every_connection() == [b"PONG"] * CONNECTIONS
        restart(redis_server)
        assert ping_on_every_connection() == [b"PONG"] * CONNECTIONS
    finally:
        client.close()

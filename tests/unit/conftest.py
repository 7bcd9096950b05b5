"""Unit fixtures: Redis is fakeredis (with Lua), one in-memory server per test."""

from __future__ import annotations

import fakeredis
import pytest


@pytest.fixture
def redis_server() -> fakeredis.FakeServer:
    """This test's in-memory Redis; clients made with ``server=redis_server`` share its data."""
    return fakeredis.FakeServer()


@pytest.fixture
def redis_client(redis_server) -> fakeredis.FakeRedis:
    """A synchronous client of this test's in-memory Redis."""
    return fakeredis.FakeRedis(server=redis_server)

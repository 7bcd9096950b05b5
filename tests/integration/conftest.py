"""Integration fixtures. A missing redis-server fails the run with how to install it."""

from __future__ import annotations

import shutil

import pytest
from loguru import logger

from scripts.processes import REDIS_INSTALL, RedisServer
from tests.integration.stack import Stack, running


@pytest.fixture(scope="session", autouse=True)
def _require_redis_server():
    if shutil.which("redis-server") is None:
        pytest.fail(
            "redis-server is required for the integration tests and was not found on PATH.\n"
            f"Install it:\n{REDIS_INSTALL}",
            pytrace=False,
        )


@pytest.fixture
def redis_server(tmp_path):
    """A redis-server of the test's own, on a free port, without the service around it."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def warnings_logged():
    """The messages logged at WARNING and above while the test runs."""
    logged: list[str] = []
    sink = logger.add(logged.append, level="WARNING", format="{message}")
    yield logged
    logger.remove(sink)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """One running service (Redis, 1 worker, gateway) shared by the tests of a module."""
    with running(Stack(tmp_path_factory.mktemp("stack"))) as started:
        yield started


@pytest.fixture
def fresh_stack(tmp_path):
    """A stack for one test (fault tests that break things). Not started: call .start()."""
    with running(Stack(tmp_path), start=lambda _stack: None) as unstarted:
        yield unstarted

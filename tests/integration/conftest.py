"""Integration fixtures. A missing redis-server fails the run with how to install it."""

from __future__ import annotations

import shutil

import pytest

from tests.integration.procs import INSTALL_HINT
from tests.integration.stack import Stack, run_stack


@pytest.fixture(scope="session", autouse=True)
def _require_redis_server():
    if shutil.which("redis-server") is None:
        pytest.fail(INSTALL_HINT, pytrace=False)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """One running service (Redis, 1 worker, gateway) shared by the tests of a module."""
    yield from run_stack(Stack(tmp_path_factory.mktemp("stack")), Stack.start)


@pytest.fixture
def fresh_stack(tmp_path):
    """A stack for one test (fault tests that break things). Not started: call .start()."""
    running = Stack(tmp_path)
    yield running
    running.stop()

"""Unit fixtures: Redis is fakeredis (with Lua), one in-memory server per test."""

from __future__ import annotations

import functools

import fakeredis
import pytest
from fakeredis.commands_mixins.scripting_mixin import ScriptingCommandsMixin

_fake_eval = ScriptingCommandsMixin.eval


@functools.wraps(_fake_eval)
def _eval_with_flags(self, script: bytes, numkeys, *keys_and_args):
    """fakeredis does not read Redis 7's script flags (a first line ``#!lua flags=...``) and
    fails on the ``#``: to it the line becomes a Lua comment. Real Redis reads them (the
    integration tests)."""
    if script.startswith(b"#!"):
        script = b"--" + script[2:]
    return _fake_eval(self, script, numkeys, *keys_and_args)


ScriptingCommandsMixin.eval = _eval_with_flags


@pytest.fixture
def redis_server() -> fakeredis.FakeServer:
    """This test's in-memory Redis; clients made with ``server=redis_server`` share its data."""
    return fakeredis.FakeServer()


@pytest.fixture
def redis_client(redis_server) -> fakeredis.FakeRedis:
    """A synchronous client of this test's in-memory Redis."""
    return fakeredis.FakeRedis(server=redis_server)

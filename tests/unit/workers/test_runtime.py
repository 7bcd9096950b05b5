"""workers/runtime.py: what the main process serving at home (workers/pool.py) relies on."""

from __future__ import annotations

import os
import time

from core.messages import WORKERS_KEY
from core.store import open_store
from tests.factories import serving_cache, settings_with
from workers import runtime as runtime_module
from workers.runtime import Runtime


class CountingCache:
    """The cache's face the refresh loop sees: how often it followed the aliases."""

    def __init__(self, cache):
        self.inner, self.refreshes = cache, 0
        self.store, self.served_version = cache.store, cache.served_version

    def refresh(self) -> None:
        self.refreshes += 1


def _runtime(monkeypatch, redis_client) -> Runtime:
    settings = settings_with(
        monkeypatch, WORKER__HEARTBEAT_SECONDS="0.05", WORKER__MODEL_POLL_SECONDS="0.02"
    )
    store = open_store(settings)
    cache = CountingCache(serving_cache(store, settings))
    return Runtime(settings=settings, store=store, redis=redis_client, cache=cache)


def _within(condition, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_a_process_that_does_not_report_follows_the_aliases_without_a_heartbeat(
    monkeypatch, redis_client
):
    """The gateway counts the processes that beat as a queue's capacity: the main process,
    which serves only when the pool is idle, must not count."""
    rt = _runtime(monkeypatch, redis_client)
    rt.start_heartbeat(report=False)
    try:
        assert _within(lambda: rt.cache.refreshes >= 5)
        assert redis_client.hlen(WORKERS_KEY) == 0
    finally:
        rt._stop.set()


def test_a_process_that_reports_beats(monkeypatch, redis_client):
    rt = _runtime(monkeypatch, redis_client)
    rt.start_heartbeat()
    try:
        assert _within(lambda: redis_client.hexists(WORKERS_KEY, rt.identity))
    finally:
        rt._stop.set()


def test_a_forked_process_builds_its_own_runtime(monkeypatch):
    """A pool process forked after the main process built its runtime (a replacement, once it
    serves at home) must not use the main process's connections, threads or identity."""
    runtime_module.configure(settings_with(monkeypatch))
    built = runtime_module.runtime()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report whether it got the parent's runtime, and go
        try:
            os.write(write_end, b"own" if runtime_module.runtime() is not built else b"parent's")
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    answer = os.read(read_end, 16)
    os.close(read_end)
    assert answer == b"own"
    assert runtime_module.runtime() is built  # the parent keeps its own

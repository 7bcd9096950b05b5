"""Workers on the solo and threads pools serve from the main process: it must start serving."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from celery.concurrency import prefork, solo, thread

from workers import celery_app


@pytest.mark.parametrize(
    ("pool_cls", "starts"),
    [(solo.TaskPool, True), (thread.TaskPool, True), (prefork.TaskPool, False)],
)
def test_inline_pools_start_the_runtime_in_the_main_process(monkeypatch, pool_cls, starts):
    started = []
    monkeypatch.setattr(celery_app, "_start_child", lambda **_: started.append(True))
    pool = pool_cls.__new__(pool_cls)  # the class is what matters, not a running pool
    celery_app._start_inline_pool(SimpleNamespace(pool=pool))
    assert started == ([True] if starts else [])

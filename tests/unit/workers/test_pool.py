"""The worker's pool hands a task to an idle pool process as it is queued (workers/pool.py).

A real asynchronous pool with one process on kombu's event loop, beside Celery's own: with
Celery's, the task waits in the outbound buffer for a turn of the loop; with ours it is
written at once. Either way the task runs in the pool process and its result comes back.
"""

from __future__ import annotations

import os
import time

import pytest
from celery.concurrency import asynpool
from kombu.asynchronous import Hub

from workers import pool


def _pid() -> int:
    return os.getpid()


def _run_until(hub: Hub, done, seconds: float = 20) -> None:
    loop, deadline = hub.create_loop(), time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        next(loop)


@pytest.mark.parametrize(
    ("pool_cls", "written_at_once"), [(pool.AsynPool, True), (asynpool.AsynPool, False)]
)
def test_a_task_goes_to_an_idle_pool_process_as_it_is_queued(pool_cls, written_at_once):
    hub = Hub()
    workers = pool_cls(processes=1, threads=False)
    try:
        workers.register_with_event_loop(hub)
        _run_until(hub, lambda: workers._all_inqueues, 10)  # the process is up, idle
        answers: list[int] = []
        workers.apply_async(_pid, callback=answers.append)
        assert (len(workers.outbound_buffer) == 0) is written_at_once
        _run_until(hub, lambda: answers)
        assert answers and answers[0] != os.getpid()  # it ran in the pool process
        workers.apply_async(_pid, callback=answers.append)  # the process is idle again
        _run_until(hub, lambda: len(answers) == 2)
        assert answers[1] == answers[0]
    finally:
        workers.terminate()
        hub.close()


def test_a_busy_process_gets_no_second_task_until_it_is_free():
    """Celery's fair scheduling holds: a second task waits in the buffer while the only
    process runs the first, and goes once it is done."""
    hub = Hub()
    workers = pool.AsynPool(processes=1, threads=False)
    try:
        workers.register_with_event_loop(hub)
        _run_until(hub, lambda: workers._all_inqueues, 10)
        answers: list[float] = []
        workers.apply_async(time.sleep, (0.5,), callback=answers.append)
        workers.apply_async(_pid, callback=answers.append)
        assert len(workers.outbound_buffer) == 1  # the first went at once
        _run_until(hub, lambda: len(answers) == 2)
        assert answers[0] is None and isinstance(answers[1], int)
    finally:
        workers.terminate()
        hub.close()

"""The worker's pool hands a task to an idle pool process as it is queued (workers/pool.py).

A real asynchronous pool with one process on kombu's event loop, beside Celery's own: with
Celery's, the task waits in the outbound buffer for a turn of the loop; with ours it is
written at once. Either way the task runs in the pool process and its result comes back.
"""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import pytest
from celery.concurrency import asynpool
from kombu.asynchronous import Hub
from kombu.asynchronous.semaphore import LaxBoundedSemaphore

from core.messages import ALONE, PREDICT_TASK
from core.settings import get_settings
from tests.factories import settings_with
from workers import pool


def _pid() -> int:
    return os.getpid()


def _pid_of_task(*_args) -> int:
    return os.getpid()


def _sleep_then_pid(*_args) -> int:
    time.sleep(0.5)
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


# -- at home: a predict message sent alone runs in the main process when the pool is idle ----
def _task_pool(monkeypatch, at_home: bool = True) -> pool.TaskPool:
    """Our TaskPool on one pool process (as on_start makes it, without a Celery app)."""
    settings = settings_with(monkeypatch, WORKER__INLINE_WHEN_ALONE=str(at_home).lower())
    # As Celery's worker makes it with an event loop (celery/worker/components.py): the
    # worker takes a slot of its semaphore for each task, and a result frees it.
    slots = LaxBoundedSemaphore(1)
    task_pool = pool.TaskPool(1, putlocks=False, semaphore=slots)
    task_pool._pool = pool.AsynPool(processes=1, threads=False, semaphore=slots)
    task_pool.on_apply = task_pool._pool.apply_async
    task_pool.terminate_job = task_pool._pool.terminate_job
    task_pool.serve_at_home(settings.worker)
    return task_pool


def _args(task: str = PREDICT_TASK, alone: bool = True, redelivered: bool = False) -> tuple:
    """``trace_task_ret``'s first arguments: task name, id, request (its headers)."""
    request = {"delivery_info": {"redelivered": redelivered}, **({ALONE: True} if alone else {})}
    return (task, "task-id", request)


def _ran_in(hub: Hub, task_pool: pool.TaskPool, args: tuple, target=_pid_of_task) -> int:
    answers: list[int] = []
    task_pool.apply_async(target, args, callback=answers.append, timeout=30)
    _run_until(hub, lambda: answers)
    return answers[0]


@pytest.fixture
def hub():
    hub = Hub()
    yield hub
    hub.close()


def _started(hub: Hub, task_pool: pool.TaskPool) -> pool.TaskPool:
    task_pool._pool.register_with_event_loop(hub)
    _run_until(hub, lambda: task_pool._pool._all_inqueues, 10)
    return task_pool


def test_a_predict_message_sent_alone_runs_in_the_main_process_when_the_pool_is_idle(
    monkeypatch, hub
):
    task_pool = _started(hub, _task_pool(monkeypatch))
    try:
        slots = task_pool._pool._putlock
        taken = []
        slots.acquire(taken.append, True)  # Celery takes a slot per task it applies
        assert _ran_in(hub, task_pool, _args()) == os.getpid()
        assert taken == [True] and slots.value == slots.initial_value  # and it is free again
    finally:
        task_pool._pool.terminate()


@pytest.mark.parametrize(
    "args",
    [
        _args(alone=False),  # its gateway had more in flight
        _args(redelivered=True),  # it may have killed a process already
        _args(task="mlops.retrain"),  # only predictions
    ],
    ids=["not-alone", "redelivered", "another-task"],
)
def test_other_messages_run_in_a_pool_process(monkeypatch, hub, args):
    task_pool = _started(hub, _task_pool(monkeypatch))
    try:
        assert _ran_in(hub, task_pool, args) != os.getpid()
    finally:
        task_pool._pool.terminate()


def test_with_a_task_in_the_pool_a_message_sent_alone_goes_to_the_pool_too(monkeypatch, hub):
    task_pool = _started(hub, _task_pool(monkeypatch))
    try:
        answers: list = []
        task_pool.apply_async(_sleep_then_pid, _args(alone=False), callback=answers.append)
        task_pool.apply_async(_pid_of_task, _args(), callback=answers.append)
        _run_until(hub, lambda: len(answers) == 2)
        assert os.getpid() not in answers
    finally:
        task_pool._pool.terminate()


def test_with_the_setting_off_every_task_runs_in_a_pool_process(monkeypatch, hub):
    task_pool = _started(hub, _task_pool(monkeypatch, at_home=False))
    try:
        assert _ran_in(hub, task_pool, _args()) != os.getpid()
    finally:
        task_pool._pool.terminate()


def test_at_the_hard_limit_at_home_the_node_answers_gives_back_and_restarts(monkeypatch, hub):
    """What the watchdog calls (its thread; the main thread is stuck in the task)."""
    steps: list = []
    monkeypatch.setattr(pool, "_give_back_messages", lambda: steps.append("give back"))
    monkeypatch.setattr(pool, "restart_process", lambda: steps.append("restart"))
    monkeypatch.setattr(pool.recovery, "stop_renewer", lambda: steps.append("stop renewing"))
    qos = SimpleNamespace(flush=lambda: steps.append("acknowledgements sent"))

    class Request:  # Celery's: on_timeout is a method of the request, which has the message
        message = SimpleNamespace(channel=SimpleNamespace(qos=qos))

        def on_timeout(self, soft: bool, seconds: float) -> None:
            steps.append(("on_timeout", soft, seconds))

    request = Request()
    task_pool = _started(hub, _task_pool(monkeypatch))
    processes = [process.pid for process in task_pool._pool._pool]
    try:
        task_pool._restart_node(8.0, request.on_timeout)
        assert steps == [
            "stop renewing",
            ("on_timeout", False, 8.0),  # Celery's hard-limit path: jobs answered, then acked
            "acknowledgements sent",
            "give back",
            "restart",
        ]
        for pid in processes:  # killed and reaped: the process that replaces this knows them not
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        task_pool._pool.terminate()


def test_ending_a_task_by_its_process_never_ends_the_node(monkeypatch):
    """A revoke with terminate, or a lost connection, names the process that ran the task:
    for one run at home, the node's own."""
    task_pool = _task_pool(monkeypatch)
    try:
        ended: list = []
        task_pool.terminate_job = lambda pid, signal=None: ended.append(pid)  # billiard's
        task_pool.serve_at_home(get_settings().worker)  # wraps it, as at start
        task_pool.terminate_job(os.getpid(), 15)
        task_pool.terminate_job(4242, 15)
        assert ended == [4242]
    finally:
        task_pool._pool.terminate()

"""Celery's prefork pool, handing a task to an idle pool process at once, or running it at home.

**At once.** Celery's asynchronous pool queues each task and writes it to a pool process on a
later turn of the event loop, once the poll says that process's pipe is writable: at one
connection the task waited for kombu to send its next BRPOP, for the pipes to be registered
with epoll and for the poll itself. A pipe of an idle process is writable (its buffer is
empty), so here the write is tried when the task is queued, the way the loop's turn would
have; if it cannot be completed, the rest goes as before, when the poll says so. Measured at
one connection on the 2-core VM (perf trace of the main process): from a message's arrival to
its write to a pool process, 1.50-1.60 -> 0.90-1.02 ms; sync p50 6.57 -> 5.24 ms in the same
run.

**At home** (``worker.inline_when_alone``). A predict message its gateway sent alone (header
``alone``: nothing else of that gateway in flight, app/services/submitter.py), first
delivered, and met by a pool with no task at all runs in this main process, as Celery's solo
pool would run it: the hop to a pool process (the pipe, and waking a process that slept on
another core) cost 0.6-1.0 ms of a 3 ms prediction at one connection on the 2-core VM. Under
load messages are not alone, so they go to the pool processes as before and the node keeps
all its cores. Two of prefork's guarantees need their own means at home:

- the hard time limit: a watchdog (workers/watchdog.py) answers the task's jobs through
  Celery's timeout path (``time_limit``) and then replaces the node's process (exec: same pid,
  so `make run`, compose and Kubernetes see nothing), since the stuck call cannot be stopped;
- crash isolation: a model that kills its process kills the node. Its messages come back by
  the sweep once no one renews them, redelivered, so never at home again: the next death
  costs a pool process only, and workers/batches.py's attempt counter ends the job.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

from celery.concurrency import asynpool, prefork
from celery.concurrency.base import apply_target
from loguru import logger

from core.messages import ALONE, PREDICT_TASK
from core.redis import sync_client
from workers import recovery
from workers.runtime import app_settings
from workers.watchdog import BACKSTOP_MARGIN_SECONDS, Watchdog


class AsynPool(asynpool.AsynPool):
    def _create_write_handlers(self, hub, *args, **kwargs):
        super()._create_write_handlers(hub, *args, **kwargs)
        queue_job, write_to = self._quick_put, hub.consolidate_callback
        writing, busy, inqueues = self._active_writes, self._busy_workers, self._all_inqueues

        def send_job(task) -> None:
            queue_job(task)
            idle = [fd for fd in inqueues if fd not in writing and fd not in busy]
            if idle:
                write_to(idle)

        self._quick_put = send_job


class TaskPool(prefork.TaskPool):
    Pool = AsynPool
    runs_at_home = False  # set at start from worker.inline_when_alone

    def on_start(self) -> None:
        super().on_start()
        self.serve_at_home(app_settings().worker)

    def serve_at_home(self, worker) -> None:
        """With ``worker.inline_when_alone``, route each task (:meth:`at_home`) to this
        process or to the pool."""
        self.runs_at_home = bool(worker.inline_when_alone)
        if not self.runs_at_home:
            return
        backstop = worker.predict_time_limit + BACKSTOP_MARGIN_SECONDS
        self._watchdog = Watchdog(self._restart_node, backstop)
        to_pool = self.on_apply

        def on_apply(target, args=None, kwargs=None, **options):
            if self.at_home(args):
                return self._run_at_home(target, args, kwargs, **options)
            return to_pool(target, args, kwargs, **options)

        self.on_apply = on_apply
        kill = self.terminate_job

        def terminate_job(pid, signal=None) -> None:
            """``celery control revoke --terminate`` and a lost connection end a task by its
            process: one run at home is over before the main process can hear of it, and its
            pid is the node's own."""
            if pid != os.getpid():
                kill(pid, signal)

        self.terminate_job = terminate_job

    def at_home(self, args) -> bool:
        """``args`` of Celery's ``trace_task_ret``: (task name, id, request, body, ...)."""
        if not args or args[0] != PREDICT_TASK or self._pool._cache:  # a task in the pool
            return False
        request = args[2] if isinstance(args[2], dict) else {}
        delivery = request.get("delivery_info") or {}
        return request.get(ALONE) is True and not delivery.get("redelivered")

    def _run_at_home(self, target, args, kwargs=None, timeout=None, timeout_callback=None, **opts):
        def limited(*a, **kw):
            with self._watchdog.limit(timeout, timeout_callback):
                return target(*a, **kw)

        try:
            apply_target(limited, args, kwargs, **opts)  # calls back as a pool process's result
        finally:  # the slot Celery's event loop took for the task, which a result frees
            slots = self.options.get("semaphore")
            if slots is not None:
                slots.release()

    def _restart_node(self, seconds: float, on_timeout) -> None:
        """The watchdog's, at the hard limit of a task run at home (its thread; the main
        thread is stuck in the task): answer and acknowledge it as prefork's limit would, give
        back the node's other messages, and start afresh in this process."""
        logger.error(
            "a predict task run in the main process passed its {}s hard time limit: its jobs "
            "are answered, then this node restarts",
            seconds,
        )
        recovery.stop_renewer()  # it must not renew what is given back
        for step in (
            lambda: on_timeout(False, seconds),  # Celery's: on_failure answers, then the ack
            lambda: _send_acknowledgements(on_timeout),
            _give_back_messages,
        ):
            try:
                step()
            except Exception as exc:  # the rest still goes; the sweep covers what did not
                logger.error("restarting after the time limit: {!r}", exc)
        self._kill_pool_processes()
        restart_process()

    def _kill_pool_processes(self) -> None:
        for process in list(getattr(self._pool, "_pool", ())):
            with contextlib.suppress(OSError):
                os.kill(process.pid, signal.SIGKILL)
                os.waitpid(process.pid, 0)


def _send_acknowledgements(on_timeout) -> None:
    """Acknowledgements ride along with the next message (workers/broker.py): send now."""
    request = getattr(on_timeout, "__self__", None)
    qos = getattr(getattr(getattr(request, "message", None), "channel", None), "qos", None)
    if hasattr(qos, "flush"):
        qos.flush()


def _give_back_messages() -> None:
    client = sync_client(app_settings().redis_url)
    try:
        recovery.give_back(client)
    finally:
        client.close()


def restart_process() -> None:
    """This worker again, in this process (the pid stays), as Celery's SIGHUP restart does."""
    logger.complete()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])  # noqa: S606 - its own argv

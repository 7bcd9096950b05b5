"""Celery's prefork pool, handing a task to an idle pool process at once.

Celery's asynchronous pool queues each task and writes it to a pool process on a later turn
of the event loop, once the poll says that process's pipe is writable: at one connection the
task waited for kombu to send its next BRPOP, for the pipes to be registered with epoll and for
the poll itself. A pipe of an idle process is writable (its buffer is empty), so here the
write is tried when the task is queued, the way the loop's turn would have; if it cannot be
completed, the rest goes as before, when the poll says so. Measured at one connection on the
2-core VM (perf trace of the main process): from a message's arrival to its write to a pool
process, 1.50-1.60 -> 0.90-1.02 ms; sync p50 6.57 -> 5.24 ms in the same run.
"""

from __future__ import annotations

from celery.concurrency import asynpool, prefork


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

"""The hard time limit of a task run in the worker's main process (workers/pool.py).

Celery's prefork pool enforces a task's hard limit by killing the pool process that runs it. A
task run in the main process cannot be killed apart from the node, and a Python thread cannot
interrupt native code. So this thread looks every ``poll`` seconds (as billiard's timeout
handler does), and when a guarded call has passed its limit it calls
``on_expiry(seconds, on_timeout)``; the guarded call never returns to its caller. The node
(workers/pool.py ``_restart_node``) answers the task's jobs through Celery's own timeout path
and replaces its process.

Starting a guarded call only stores its deadline: a thread woken per task costs a wake-up, the
very thing serving at home saves. (A first version that woke this thread and armed
faulthandler's timer, a new thread, for each task measured 1.65x in-process against 1.85x in
the pool at one connection on the 2-core VM; this one 1.23x against 1.45x, README
"Performance".)

A call that holds the GIL in native code starves this thread too. Each look re-arms
faulthandler's timer, a C thread that needs no GIL: if this thread has not looked for
``backstop`` seconds (the longest limit and a margin), faulthandler dumps every thread's stack
and ends the process (its messages come back by the sweep, as a dead node's do).
"""

from __future__ import annotations

import contextlib
import faulthandler
import sys
import threading
import time
from collections.abc import Callable, Iterator

POLL_SECONDS = 1.0
BACKSTOP_MARGIN_SECONDS = 10.0  # beyond the longest limit, when this thread could not look

Expiry = Callable[[float, Callable], None]


class Watchdog:
    def __init__(
        self,
        on_expiry: Expiry,
        backstop: float | None,
        poll: float = POLL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._on_expiry, self._backstop, self._poll, self._clock = on_expiry, backstop, poll, clock
        self._lock = threading.Lock()
        self._running: tuple[float, float, Callable] | None = None  # deadline, limit, callback
        self._fired = False
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def limit(self, seconds: float | None, on_timeout: Callable) -> Iterator[None]:
        """Run the block under a hard limit of ``seconds`` (none if falsy). Past it, the block
        is abandoned: ``on_expiry`` runs, and the block's thread waits for ever after it."""
        if not seconds:
            yield
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="watchdog", daemon=True)
            self._thread.start()
        self._running = (self._clock() + seconds, seconds, on_timeout)
        try:
            yield
        finally:
            with self._lock:
                self._running = None
                fired = self._fired
            if fired:  # its jobs are answered and its message acknowledged already:
                threading.Event().wait()  # nothing more may happen here (the process goes)

    def _watch(self) -> None:
        while True:
            if self._backstop:
                faulthandler.dump_traceback_later(self._backstop, exit=True, file=sys.stderr)
            time.sleep(self._poll)
            with self._lock:
                running = self._running
                if running is None or self._clock() < running[0]:
                    continue
                self._fired = True
            if self._backstop:  # expiry may take a while (Redis): the process goes anyway
                faulthandler.dump_traceback_later(self._backstop, exit=True, file=sys.stderr)
            self._on_expiry(running[1], running[2])
            return

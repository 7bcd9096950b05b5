"""`make run`'s supervision: children started on one console (scripts/processes.py), a signal or
an unexpected exit noticed at once, everything stopped together, Redis last.
"""

from __future__ import annotations

import shlex
import signal
import threading
import time
from collections.abc import Callable

from scripts.processes import Console, Process, poll

STOP_TIMEOUT = 20.0  # a worker's warm shutdown finishes running batches first


class Interrupted(Exception):
    """Ctrl-C or SIGTERM arrived."""


class ChildDied(Exception):
    def __init__(self, child: Process):
        super().__init__(f"{child.name} exited unexpectedly (exit code {child.returncode()})")
        self.child = child


class Supervisor:
    """Starts children, notices signals and unexpected exits, stops everything in order."""

    def __init__(self, console: Console):
        self.console = console
        self.services: list[Process] = []
        self.infrastructure: list[Process] = []  # stopped after the services (Redis)
        self.stopping = threading.Event()
        self.forced = threading.Event()

    def on_signal(self, signum, _frame) -> None:
        if self.stopping.is_set():
            self.forced.set()
            return
        self.stopping.set()
        self.console.say(
            f"\n==> {signal.Signals(signum).name}: stopping (press Ctrl-C again to kill at once)"
        )

    def start(self, child: Process, *, infrastructure: bool = False) -> Process:
        self.check()
        child.start(self.console)
        (self.infrastructure if infrastructure else self.services).append(child)
        self.console.say(f"==> started {child.name} (pid {child.pid}): {shlex.join(child.args)}")
        return child

    def check(self) -> None:
        if self.stopping.is_set():
            raise Interrupted
        for child in self.infrastructure + self.services:
            if child.watched and not child.alive():
                raise ChildDied(child)

    def wait_until(self, done: Callable[[], bool], timeout: float | None, interval=0.25) -> bool:
        """Poll ``done`` until true (True) or the timeout (False); signals and deaths raise."""

        def step() -> bool:
            self.check()
            return done()

        return poll(step, timeout, interval=interval, sleep=self.stopping.wait)

    def run_to_end(self, child: Process) -> int:
        """Run a one-shot command (its output streamed) and return its exit code."""
        child.watched = False
        self.start(child)
        self.wait_until(lambda: not child.alive(), None)
        child.finish()
        return child.proc.returncode

    def serve_forever(self) -> None:
        self.wait_until(lambda: False, None, interval=0.5)

    def shutdown(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM to every running service at once, SIGKILL after ``timeout``; then Redis."""
        for group in (self.services, self.infrastructure):
            running = [c for c in group if c.alive()]
            if running:
                names = ", ".join(c.name for c in running)
                self.console.say(f"==> stopping {names}")
            for child in running:
                child.signal_group(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while any(c.alive() for c in running) and time.monotonic() < deadline:
                if self.forced.wait(0.1):
                    break
            for child in group:
                if child.alive():
                    self.console.say(f"==> {child.name} did not stop in time: killing it")
                child.finish()

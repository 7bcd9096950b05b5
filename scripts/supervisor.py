"""Child processes for `make run`: started in their own process groups, output streamed to
the terminal with each line prefixed by the child's name (honcho/foreman style), stopped
together on a signal or when one of them dies.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
STOP_TIMEOUT = 20.0  # a worker's warm shutdown finishes running batches first
TAIL_LINES = 30


class Interrupted(Exception):
    """Ctrl-C or SIGTERM arrived."""


class ChildDied(Exception):
    def __init__(self, child: Child):
        super().__init__(f"{child.name} exited unexpectedly (exit code {child.returncode()})")
        self.child = child


COLORS = ("36", "33", "35", "32", "34", "31")


class Console:
    """Whole lines to the terminal from the pump threads and the main thread."""

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream or sys.stdout
        self.color = self.stream.isatty()
        self.width = 8
        self._lock = threading.RLock()  # a signal handler may print while main holds it
        self._colors: dict[str, str] = {}

    def say(self, text: str = "") -> None:
        with self._lock, contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP)
            self.stream.write(text + "\n")
            self.stream.flush()

    def prefix(self, name: str) -> str:
        label = f"{name:<{self.width}} |"
        if not self.color:
            return label
        code = self._colors.setdefault(name, COLORS[len(self._colors) % len(COLORS)])
        return f"\033[{code}m{label}\033[0m"

    def line(self, name: str, text: str) -> None:
        self.say(f"{self.prefix(name)} {text}")


def pump(stream: IO[bytes], name: str, console: Console, tail: collections.deque) -> None:
    """Copy a child's output to the console line by line, keeping the last lines."""
    with stream:
        for raw in iter(stream.readline, b""):
            text = raw.decode(errors="replace").rstrip("\r\n")
            tail.append(text)
            console.line(name, text)


@dataclass
class Child:
    """One subprocess in its own process group (so a signal reaches its pool children too)."""

    name: str
    args: list[str]
    env: dict[str, str]
    watched: bool = True  # its exit is unexpected (False for one-shot commands)
    proc: subprocess.Popen | None = None
    tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=TAIL_LINES))
    _reader: threading.Thread | None = None

    def start(self, console: Console) -> Child:
        self.proc = subprocess.Popen(  # noqa: S603 - our own commands, no shell
            self.args,
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._reader = threading.Thread(
            target=pump, args=(self.proc.stdout, self.name, console, self.tail), daemon=True
        )
        self._reader.start()
        return self

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal_group(self, sig: int) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)

    def finish(self) -> None:
        """Reap it (killing it if still running), kill anything left in its group."""
        if self.proc is None:
            return
        if self.running():
            self.signal_group(signal.SIGKILL)
        self.proc.wait()
        self.signal_group(signal.SIGKILL)  # leftovers that outlived their leader
        if self._reader is not None:
            self._reader.join(timeout=2)

    def last_lines(self) -> str:
        return "\n".join(self.tail)


class Supervisor:
    """Starts children, notices signals and unexpected exits, stops everything in order."""

    def __init__(self, console: Console):
        self.console = console
        self.services: list[Child] = []
        self.infrastructure: list[Child] = []  # stopped after the services (Redis)
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

    def start(self, child: Child, *, infrastructure: bool = False) -> Child:
        self.check()
        child.start(self.console)
        (self.infrastructure if infrastructure else self.services).append(child)
        self.console.say(f"==> started {child.name} (pid {child.pid}): {shlex.join(child.args)}")
        return child

    def check(self) -> None:
        if self.stopping.is_set():
            raise Interrupted
        for child in self.infrastructure + self.services:
            if child.watched and not child.running():
                raise ChildDied(child)

    def wait_until(self, done: Callable[[], bool], timeout: float | None, interval=0.25) -> bool:
        """Poll ``done`` until true (True) or the timeout (False); signals and deaths raise."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.check()
            if done():
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            self.stopping.wait(interval)

    def run_to_end(self, child: Child) -> int:
        """Run a one-shot command (its output streamed) and return its exit code."""
        child.watched = False
        self.start(child)
        self.wait_until(lambda: not child.running(), None)
        child.finish()
        return child.proc.returncode

    def serve_forever(self) -> None:
        self.wait_until(lambda: False, None, interval=0.5)

    def shutdown(self, timeout: float = STOP_TIMEOUT) -> None:
        for group in (self.services, self.infrastructure):
            running = [c for c in group if c.running()]
            if running:
                names = ", ".join(c.name for c in running)
                self.console.say(f"==> stopping {names}")
            for child in running:
                child.signal_group(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while any(c.running() for c in running) and time.monotonic() < deadline:
                if self.forced.wait(0.1):
                    break
            for child in group:
                if child.running():
                    self.console.say(f"==> {child.name} did not stop in time: killing it")
                child.finish()

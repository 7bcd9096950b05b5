"""workers/watchdog.py: the hard limit of a task run in the worker's main process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

from workers.watchdog import Watchdog

POLL = 0.02


def _guarded(watchdog: Watchdog, seconds: float, work, on_timeout=None):
    """Run ``work`` under the limit in a thread of its own; the thread and what it returned."""
    returned: list = []

    def run() -> None:
        with watchdog.limit(seconds, on_timeout or (lambda *_: None)):
            work()
        returned.append(True)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, returned


def _wait_for(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_a_call_past_its_limit_is_expired_once_and_never_returns():
    expired: list = []
    release = threading.Event()
    watchdog = Watchdog(lambda *args: expired.append(args), backstop=None, poll=POLL)

    def on_timeout(*_):
        return None

    thread, returned = _guarded(watchdog, 0.1, release.wait, on_timeout)
    assert _wait_for(lambda: expired)
    release.set()  # the stuck call ends after all: nothing more may run after it
    time.sleep(0.2)
    assert expired == [(0.1, on_timeout)]
    assert thread.is_alive() and returned == []


def test_a_call_within_its_limit_returns_and_nothing_expires():
    expired: list = []
    watchdog = Watchdog(lambda *args: expired.append(args), backstop=None, poll=POLL)
    for _ in range(3):
        thread, returned = _guarded(watchdog, 5.0, lambda: time.sleep(0.05))
        thread.join(5)
        assert returned == [True]
    time.sleep(5 * POLL)
    assert expired == []


def test_no_limit_starts_no_thread():
    watchdog = Watchdog(lambda *_: None, backstop=None, poll=POLL)
    with watchdog.limit(None, lambda *_: None):
        pass
    assert watchdog._thread is None


BACKSTOP_SCRIPT = """
import re, time
from workers.watchdog import Watchdog

expired = []
watchdog = Watchdog(lambda *args: expired.append(args), backstop=1.0, poll=0.05)
with watchdog.limit(0.2, lambda *_: None):
    time.sleep(0.1)  # the watchdog thread looks, then the GIL is held in C for ever:
    re.match(r"(a+)+$", "a" * 64 + "b")  # catastrophic backtracking never yields it
print("never reached", expired)
"""


def test_a_call_holding_the_gil_ends_the_process_at_the_backstop():
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(BACKSTOP_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0, done
    assert "never reached" not in done.stdout
    assert "Timeout" in done.stderr and " in match" in done.stderr  # faulthandler's dump

"""scripts/supervisor.py: make run's children stop together, on a signal or when one dies."""

from __future__ import annotations

import io
import sys

import pytest

from scripts.processes import Console, Process
from scripts.supervisor import ChildDied, Interrupted, Supervisor


def quiet_supervisor() -> tuple[Supervisor, io.StringIO]:
    out = io.StringIO()
    return Supervisor(Console(out)), out


def test_a_signal_interrupts_any_wait_and_a_second_one_forces():
    supervisor, out = quiet_supervisor()
    supervisor.on_signal(2, None)
    with pytest.raises(Interrupted):
        supervisor.wait_until(lambda: False, None)
    assert "stopping" in out.getvalue()
    assert not supervisor.forced.is_set()
    supervisor.on_signal(15, None)
    assert supervisor.forced.is_set()


def test_a_child_that_exits_is_reported_with_its_last_lines():
    supervisor, _ = quiet_supervisor()
    code = "print('about to fail', flush=True); raise SystemExit(3)"
    child = supervisor.start(Process("flaky", [sys.executable, "-c", code], {}))
    try:
        with pytest.raises(ChildDied) as info:
            supervisor.wait_until(lambda: False, 60)
    finally:
        supervisor.shutdown()
    assert info.value.child is child
    assert child.returncode() == 3
    assert "exit code 3" in str(info.value)
    assert "about to fail" in child.last_lines()


def test_shutdown_stops_a_running_child_and_its_group():
    supervisor, out = quiet_supervisor()
    code = "import time; print('up', flush=True); time.sleep(120)"
    child = supervisor.start(Process("sleeper", [sys.executable, "-c", code], {}))
    assert supervisor.wait_until(lambda: "up" in child.last_lines(), 60)
    supervisor.shutdown(timeout=30)
    assert not child.alive()
    assert child.returncode() != 0  # ended by SIGTERM
    assert "stopping sleeper" in out.getvalue()

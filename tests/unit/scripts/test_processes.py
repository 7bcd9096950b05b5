"""scripts/processes.py: the process toolkit of `make run`, the integration tests and the bench."""

from __future__ import annotations

import collections
import io
import os
import signal
import socket
import sys
import threading
import time

import pytest

from scripts.processes import (
    Console,
    Process,
    free_port,
    group_members,
    poll,
    port_taken,
    pump,
    wait_until,
)


def test_port_taken():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert port_taken("127.0.0.1", sock.getsockname()[1])
    assert not port_taken("127.0.0.1", free_port())


def test_pump_prefixes_each_line_and_keeps_the_last_ones():
    out = io.StringIO()
    tail = collections.deque(maxlen=2)
    pump(io.BytesIO(b"one\ntwo\r\nthr\xffee\n"), "worker", Console(out), tail)
    lines = out.getvalue().splitlines()
    assert lines == ["worker   | one", "worker   | two", "worker   | thr\ufffdee"]
    assert list(tail) == ["two", "thr\ufffdee"]


def test_console_lines_from_threads_never_interleave():
    out = io.StringIO()
    console = Console(out)

    def write(name: str) -> None:
        for i in range(200):
            console.line(name, f"{name}-{i}")

    threads = [threading.Thread(target=write, args=(n,)) for n in ("a", "b", "c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = out.getvalue().splitlines()
    assert len(lines) == 600
    for line in lines:
        name, text = line.split(" | ")
        assert text.startswith(name.strip() + "-")


# -- a child process -----------------------------------------------------------------------------

STUBBORN = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"
subprocess.Popen([sys.executable, "-c", code])  # a pool child: same process group
print("up", flush=True)
time.sleep(120)
"""


def test_a_process_that_ignores_sigterm_is_killed_with_its_group_after_the_grace(tmp_path):
    process = Process("stubborn", [sys.executable, "-c", STUBBORN], dict(os.environ), tmp_path)
    process.start()
    wait_until(lambda: "up" in process.output() and len(group_members(process.pid)) == 2, 30, "up")
    started = time.monotonic()
    process.stop(grace=1)
    assert 1 <= time.monotonic() - started < 10
    assert process.returncode() == -signal.SIGKILL
    assert group_members(process.pid) == []  # the child that outlived its leader too


def test_output_goes_to_the_log_file_and_the_last_lines_come_from_it(tmp_path):
    code = "print('\\n'.join(f'line {i}' for i in range(50)))"
    process = Process("talker", [sys.executable, "-c", code], dict(os.environ), tmp_path)
    process.start()
    process.proc.wait(30)
    process.stop()
    assert (tmp_path / "talker.log").read_text().startswith("line 0\n")
    assert process.last_lines(2) == "line 48\nline 49"
    assert not process.alive()


def test_waiting_ignores_errors_until_the_deadline_and_names_what_it_waited_for():
    calls = []

    def not_yet() -> bool:
        calls.append(1)
        raise ConnectionError("not up yet")

    with pytest.raises(TimeoutError, match="waiting for the thing"):
        wait_until(not_yet, 0.2, "the thing", interval=0.01)
    assert len(calls) > 1
    with pytest.raises(ConnectionError):  # poll lets errors through unless told to ignore them
        poll(not_yet, 0.2)
    assert poll(lambda: True, 0) and not poll(lambda: False, 0)

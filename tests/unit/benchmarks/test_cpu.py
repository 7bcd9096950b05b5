"""benchmarks/cpu.py: CPU seconds from /proc, per part and per request."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.cpu import (
    LOAD_GENERATOR,
    REST,
    CpuMeter,
    grown,
    machine_cpu_seconds,
    per_request_us,
    stat_cpu_seconds,
)


def burn(seconds: float) -> None:
    """Use ``seconds`` of this process's CPU."""
    start = time.process_time()
    while time.process_time() - start < seconds:
        pass


CHILD_BURN = "from tests.unit.benchmarks.test_cpu import burn; burn(0.3)"


def test_utime_and_stime_are_counted_from_the_last_parenthesis_of_the_command_name():
    stat = "4321 (a) b (c) S 1 4321 4321 0 -1 4194560 100 0 0 0 250 50 7 9 20 0 1 0 100 1 2"
    assert stat_cpu_seconds(stat, ticks=100) == pytest.approx(3.0)  # (250 + 50) / 100


def test_this_process_reads_as_much_cpu_as_it_used():
    burn(0.2)
    from_proc = stat_cpu_seconds(Path(f"/proc/{os.getpid()}/stat").read_text())
    times = os.times()
    assert from_proc == pytest.approx(times.user + times.system, abs=0.05)


def test_machine_busy_is_everything_but_idle_and_iowait():
    proc_stat = "cpu  100 5 50 1000 20 1 2 3 0 0\ncpu0 50 2 25 500 10 0 1 1 0 0\n"
    busy, total = machine_cpu_seconds(proc_stat, ticks=100)
    assert (busy, total) == pytest.approx((1.61, 11.81))


def test_a_process_that_appears_counts_in_full_and_one_that_ends_is_left_out():
    assert grown({1: 1.0, 2: 2.0}, {1: 1.5, 3: 0.25}) == pytest.approx(0.75)


def test_the_meter_gives_each_part_and_the_load_generator_their_own_cpu():
    meter = CpuMeter({"this process": lambda: [os.getpid()], "nothing": lambda: []})
    meter.start()
    burn(0.3)
    subprocess.run([sys.executable, "-c", CHILD_BURN], check=True)  # a child, reaped
    used = meter.stop()
    assert used["this process"] == pytest.approx(0.3, abs=0.08)
    assert used[LOAD_GENERATOR] >= 0.3
    assert used["nothing"] == 0
    assert used[REST] >= 0
    assert used["wall x cores"] >= 0.3 * os.cpu_count() - 0.1  # at least the wall time spent


def test_a_meter_read_tolerates_a_process_that_is_gone():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    meter = CpuMeter({"gone": lambda: [child.pid]})
    meter.start()
    assert meter.stop()["gone"] == 0


def test_per_request_leaves_out_the_machine_and_divides_the_parts():
    cpu = {"gateway": 0.5, "redis": 0.1, REST: 1.0, "wall x cores": 2.0}
    assert per_request_us(cpu, 1000) == {"gateway": 500.0, "redis": 100.0}
    assert per_request_us(cpu, 0) == {}

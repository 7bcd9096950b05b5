"""The CPU each part of the service used during a load point, read from /proc.

A part is a name and the processes it is (a gateway process, Redis, a worker node's main
process, its pool processes). :class:`CpuMeter` reads each process's user + system time
before and after a point; the difference, divided by the requests served, is the part's CPU
per request: steadier than requests/s on a machine shared with other jobs, and what sizing a
deployment needs. The load generator (this process's children, e.g. wrk) and the rest of the
machine (every other process, from /proc/stat) are counted too, so a reader sees how much of
the two cores the service had.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from scripts.processes import process_tree

TICKS = os.sysconf("SC_CLK_TCK")
LOAD_GENERATOR = "load generator"
REST = "rest of the machine"


def stat_cpu_seconds(stat: str, ticks: int = TICKS) -> float:
    """User + system CPU seconds of one process, from the text of its /proc/<pid>/stat.

    The command name (field 2) is in parentheses and may hold spaces or parentheses itself,
    so the fields are counted from the last ")": utime and stime are fields 14 and 15."""
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / ticks


def machine_cpu_seconds(proc_stat: str, ticks: int = TICKS) -> tuple[float, float]:
    """``(busy, total)`` CPU seconds of every core since boot, from the text of /proc/stat.

    Busy is everything but idle and iowait; guest time is already inside user and nice."""
    values = [int(v) for v in proc_stat.splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])  # user nice system idle iowait irq softirq steal
    return (total - idle) / ticks, total / ticks


def process_seconds(pids: Iterable[int]) -> dict[int, float]:
    """``{pid: CPU seconds}`` of the processes that still exist."""
    seconds = {}
    for pid in pids:
        try:
            seconds[pid] = stat_cpu_seconds(Path(f"/proc/{pid}/stat").read_text())
        except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
            continue  # ended meanwhile (or a zombie mid-way)
    return seconds


def grown(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU used between two readings: a process that appeared in between counts in full; one
    that ended in between is lost (pool processes are long-lived, so this stays small)."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def tree(pid: int) -> Callable[[], list[int]]:
    return lambda: process_tree(pid)


def children_of(pid: int) -> Callable[[], list[int]]:
    """A worker node's pool: its main process's descendants, without the main process."""
    return lambda: process_tree(pid)[1:]


@dataclass
class CpuMeter:
    """Named parts, each a function giving its pids now; :meth:`start` then :meth:`stop`."""

    parts: dict[str, Callable[[], list[int]]]
    _before: dict = field(default_factory=dict)

    def read(self) -> dict:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return {
            "parts": {name: process_seconds(pids()) for name, pids in self.parts.items()},
            "children": usage.ru_utime + usage.ru_stime,
            "machine": machine_cpu_seconds(Path("/proc/stat").read_text()),
        }

    def start(self) -> None:
        self._before = self.read()

    def stop(self) -> dict[str, float]:
        """CPU seconds of each part since :meth:`start`, the load generator's (children of
        this process that ended meanwhile, as wrk does) and the rest of the machine's."""
        after, before = self.read(), self._before
        used = {
            name: round(grown(before["parts"][name], after["parts"][name]), 3)
            for name in self.parts
        }
        used[LOAD_GENERATOR] = round(after["children"] - before["children"], 3)
        busy = after["machine"][0] - before["machine"][0]
        used[REST] = round(max(0.0, busy - sum(used.values())), 3)
        used["wall x cores"] = round(after["machine"][1] - before["machine"][1], 3)
        return used


def per_request_us(cpu: dict[str, float], requests: int) -> dict[str, float]:
    """Microseconds of CPU per request of each part (the machine's share left out)."""
    if not requests:
        return {}
    return {
        name: round(seconds / requests * 1e6, 1)
        for name, seconds in cpu.items()
        if name not in (REST, "wall x cores")
    }


def service_us(per_request: dict[str, float]) -> float:
    """The server's own CPU per request: every part's but the load generator's."""
    return round(sum(us for name, us in per_request.items() if name != LOAD_GENERATOR), 1)

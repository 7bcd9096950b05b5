"""Child processes, one toolkit for `make run`, the integration tests and `make bench`.

- :class:`Process`: a command in its own process group (a signal reaches a worker's pool
  children too), its output appended to a log file or streamed to a :class:`Console` with each
  line prefixed by its name (honcho/foreman style); stopped with SIGTERM, a grace period, then
  SIGKILL for the whole group.
- :class:`RedisServer`: a private redis-server on a free port in its own folder.
- :func:`free_port`, :func:`port_taken`, :func:`poll` / :func:`wait_until`, :func:`child_env`,
  and the Linux process table (/proc): children, trees, groups, memory figures.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import redis

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the venv's bin folder: uvicorn and celery live here
STOP_GRACE = 15.0  # a worker's warm shutdown finishes its running batch first
TAIL_LINES = 30
COLORS = ("36", "33", "35", "32", "34", "31")


# -- waiting, ports, environments --------------------------------------------------------------


def poll(
    check: Callable[[], object],
    timeout: float | None,
    *,
    interval: float = 0.05,
    sleep: Callable[[float], object] = time.sleep,
    ignore: tuple[type[BaseException], ...] = (),
) -> bool:
    """Call ``check`` until it returns true (True) or ``timeout`` seconds pass (False; None
    waits for ever). It runs at least once; exceptions of the types in ``ignore`` count as
    "not yet", others propagate. ``sleep`` pauses between calls (an Event's ``wait`` ends a
    pause early when the event is set)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            if check():
                return True
        except ignore:
            pass
        if deadline is not None and time.monotonic() >= deadline:
            return False
        sleep(interval)


def wait_until(check: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    """:func:`poll` ignoring ``check``'s exceptions (what we wait for is not up yet);
    TimeoutError naming ``what`` when ``timeout`` seconds pass."""
    if not poll(check, timeout, interval=interval, ignore=(Exception,)):
        raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (another process may take it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_taken(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def child_env(*, inherit_settings: bool = True, **extra: str) -> dict[str, str]:
    """This process's environment for a child, with this venv's bin folder first on PATH and
    unbuffered Python output, then ``extra``. ``inherit_settings=False`` leaves out the
    parent's MLOPS_* settings (tests and the benchmark set their own)."""
    env = {k: v for k, v in os.environ.items() if inherit_settings or not k.startswith("MLOPS_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


# -- the process table (Linux /proc) -----------------------------------------------------------


def process_table() -> Iterator[tuple[int, list[str]]]:
    """``(pid, fields)`` for every process, fields of /proc/<pid>/stat after "pid (comm)".

    ``fields[0]`` is the state, ``fields[1]`` the parent pid, ``fields[2]`` the process group.
    """
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # the process ended meanwhile
            continue
        yield int(entry.name), stat[stat.rindex(")") + 2 :].split()


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (a worker's pool processes)."""
    return [child for child, fields in process_table() if int(fields[1]) == pid]


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    return [pid] + [q for child in children(pid) for q in process_tree(child)]


def group_members(pgid: int) -> list[int]:
    """The processes of process group ``pgid`` that are not zombies."""
    return [
        pid
        for pid, fields in process_table()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X")
    ]


def status_kib(pid: int, field: str) -> int:
    """A memory figure of /proc/<pid>/status in KiB ("VmRSS" now, "VmHWM" the peak); 0 when
    the process has none (a zombie). FileNotFoundError when the process is gone."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


# -- output -------------------------------------------------------------------------------------


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


# -- a child process ----------------------------------------------------------------------------


class Process:
    """One command in its own process group (so a signal reaches its pool children too).

    Its output goes to ``<log_dir>/<name>.log`` (appended), or, when started with a console,
    to that console line by line with its name as prefix (the last lines kept for messages).
    """

    def __init__(
        self,
        name: str,
        args: list[str],
        env: dict[str, str],
        log_dir: Path | None = None,
        *,
        watched: bool = True,
    ):
        self.name = name
        self.args = list(args)
        self.env = env
        self.log_path = None if log_dir is None else Path(log_dir) / f"{name}.log"
        self.watched = watched  # its exit is unexpected (False for one-shot commands)
        self.proc: subprocess.Popen | None = None
        self.tail: collections.deque = collections.deque(maxlen=TAIL_LINES)
        self._reader: threading.Thread | None = None

    def start(self, console: Console | None = None) -> Process:
        if console is not None:
            self.proc = self._popen(subprocess.PIPE)
            self._reader = threading.Thread(
                target=pump, args=(self.proc.stdout, self.name, console, self.tail), daemon=True
            )
            self._reader.start()
            return self
        if self.log_path is None:
            raise ValueError(f"{self.name}: give it a log folder or start it with a console")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:  # the child has its own copy of the descriptor
            self.proc = self._popen(log)
        return self

    def _popen(self, stdout) -> subprocess.Popen:
        return subprocess.Popen(  # noqa: S603 - our own commands, no shell
            self.args,
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        """Everything it wrote to its log file; the last lines when it writes to a console."""
        if self.log_path is None:
            return "\n".join(self.tail)
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def last_lines(self, count: int = TAIL_LINES) -> str:
        return "\n".join(self.output().splitlines()[-count:])

    def signal_group(self, sig: int) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM to its group; what still runs after ``grace`` seconds gets SIGKILL."""
        if self.alive():
            self.signal_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace)
        self.finish()

    def kill(self) -> None:
        """SIGKILL to its whole group at once (a node that dies without a goodbye)."""
        if self.alive():
            self.signal_group(signal.SIGKILL)
        self.finish()

    def finish(self) -> None:
        """Reap it (killing it if still running), kill anything left in its group."""
        if self.proc is None:
            return
        if self.alive():
            self.signal_group(signal.SIGKILL)
        self.proc.wait()
        self.signal_group(signal.SIGKILL)  # leftovers that outlived their leader
        with contextlib.suppress(TimeoutError):  # a SIGKILL lands a moment after it is sent
            wait_until(lambda: not group_members(self.proc.pid), 5, f"{self.name}'s group")
        if self._reader is not None:
            self._reader.join(timeout=2)


# -- a private redis-server ---------------------------------------------------------------------

REDIS_INSTALL = """\
  Debian/Ubuntu:  sudo apt-get install redis-server
  macOS:          brew install redis
  conda:          conda install -c conda-forge redis-server"""


class RedisServerMissing(RuntimeError):
    def __init__(self) -> None:
        super().__init__(f"redis-server is not on PATH. Install it:\n{REDIS_INSTALL}")


class RedisServer:
    """A redis-server on a free port of 127.0.0.1 in its own folder, without snapshots (and
    without an append-only file unless asked); it can be stopped, frozen and restarted on the
    same port. Its output goes to redis.log in its folder, or to a console."""

    def __init__(self, workdir: Path, *, appendonly: bool = False, extra: list[str] | None = None):
        exe = shutil.which("redis-server")
        if exe is None:
            raise RedisServerMissing
        self.exe = exe
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.appendonly = appendonly
        self.extra = extra or []
        self.process: Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def command(self) -> list[str]:
        return [
            self.exe,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.workdir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",
            *self.extra,
        ]  # fmt: skip

    def child(self, env: dict[str, str] | None = None) -> Process:
        """The server as a Process, not started (a supervisor may start it on its console)."""
        return Process("redis", self.command(), child_env() if env is None else env, self.workdir)

    def start(self, timeout: float = 10) -> RedisServer:
        """Start it, logging to its folder, and wait until it answers PING."""
        self.process = self.child().start()
        wait_until(lambda: self.client().ping(), timeout, f"redis-server on port {self.port}")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.signal_group(signal.SIGCONT)  # a frozen server cannot exit
            self.process.stop(grace=10)
        self.process = None

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
        self.process = None

    def freeze(self) -> None:
        assert self.process is not None  # noqa: S101 - a test's mistake, not a user's
        self.process.signal_group(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None  # noqa: S101 - a test's mistake, not a user's
        self.process.signal_group(signal.SIGCONT)

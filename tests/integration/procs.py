"""Real processes for integration tests: a private redis-server and service subprocesses."""

from __future__ import annotations

import asyncio
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

import redis

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

INSTALL_HINT = (
    "redis-server is required for the integration tests and was not found on PATH.\n"
    "Install it: `sudo apt-get install redis-server` (Debian/Ubuntu), "
    "`brew install redis` (macOS), or `conda install -c conda-forge redis-server`."
)


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: S110 - the thing we wait for is not up yet
            pass
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


class RedisServer:
    """A redis-server on a free port in its own folder; can be stopped, frozen and restarted."""

    def __init__(self, workdir: Path, *, appendonly: bool = False, extra: list[str] | None = None):
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError(INSTALL_HINT)
        self.exe = exe
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.appendonly = appendonly
        self.extra = extra or []
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def start(self) -> RedisServer:
        args = [
            self.exe,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.workdir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",
            "--logfile", str(self.workdir / "redis.log"),
            *self.extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_until(lambda: self.client().ping(), 10, f"redis-server on port {self.port}")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


class Service:
    """A long-running subprocess (worker, gateway, beat, flower) with its output in a file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logdir: Path):
        self.name = name
        self.args = args
        self.env = env
        self.log_path = Path(logdir) / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Service:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        self.proc = subprocess.Popen(
            self.args,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def signal_group(self, sig: int) -> None:
        if self.alive():
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 15) -> None:
        if not self.alive():
            return
        self.signal_group(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal_group(signal.SIGKILL)
            self.proc.wait()

    def kill(self) -> None:
        if self.alive():
            self.signal_group(signal.SIGKILL)
            self.proc.wait()


def signing_env() -> dict[str, str]:
    """This test session's signing keys (tests/conftest.py), for a subprocess."""
    return {k: v for k, v in os.environ.items() if k.startswith("MLOPS_SIGNING__")}


def service_env(redis_url: str, artifacts_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for a service subprocess: testing settings against the private Redis, and
    this session's signing keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    env.update(
        {
            **signing_env(),
            "MLOPS_ENV": "testing",
            "MLOPS_REDIS_URL": redis_url,
            "MLOPS_ARTIFACTS_DIR": str(artifacts_dir),
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


class ScriptReplyDelay:
    """A TCP proxy in front of Redis that holds the reply to every EVAL/EVALSHA for ``delay``
    seconds once :meth:`arm` is called: the script runs in Redis at once, its answer comes late.

    That is a Redis (or network) that applied a write but whose reply the client gave up on,
    which no signal to redis-server can produce: a paused or frozen Redis runs nothing, and
    drops the command of a client that disconnects meanwhile.
    """

    def __init__(self, target_port: int, delay: float):
        self.target_port = target_port
        self.delay = delay
        self.port = free_port()
        self.armed = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> ScriptReplyDelay:
        self._thread.start()
        serve = asyncio.start_server(self._connection, "127.0.0.1", self.port)
        asyncio.run_coroutine_threadsafe(serve, self._loop).result(10)
        return self

    def arm(self) -> None:
        self.armed.set()

    async def _connection(self, client_reader, client_writer) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        scripts = asyncio.Queue()  # one entry per request chunk: hold its reply?

        async def upstream() -> None:
            while data := await client_reader.read(65536):
                scripts.put_nowait(self.armed.is_set() and b"EVAL" in data[:64].upper())
                server_writer.write(data)
                await server_writer.drain()
            server_writer.close()

        async def downstream() -> None:
            while data := await server_reader.read(65536):
                hold = False
                while not scripts.empty():
                    hold = scripts.get_nowait() or hold
                if hold:
                    await asyncio.sleep(self.delay)
                client_writer.write(data)
                await client_writer.drain()
            client_writer.close()

        with contextlib.suppress(OSError):
            await asyncio.gather(upstream(), downstream())

    def stop(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(cancel_all(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

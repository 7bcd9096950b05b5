"""`make run` for real: `python -m scripts.run_service` as a subprocess, the way make runs it.

It must start its own redis-server (MLOPS_REDIS_URL points at a port where nothing listens),
train a first model, start worker, beat, Flower and the gateway, print a curl that works,
and on SIGINT leave no process behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import redis

from scripts.processes import ROOT, child_env, free_port, group_members, wait_until
from tests.factories import signing_env

pytestmark = [pytest.mark.integration, pytest.mark.serial]

STARTED = re.compile(r"^==> started (\S+) \(pid (\d+)\)")
PRIVATE_REDIS = re.compile(r"^==> private redis-server \(pid (\d+)\) at (redis://\S+):")
RUN_DIR = re.compile(r"--dir (\S+)/redis\b")


class RunService:
    """`python -m scripts.run_service` with its output collected line by line."""

    def __init__(self, env: dict[str, str], *args: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scripts.run_service", *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, prefix: str, timeout: float) -> str:
        def found() -> bool:
            assert self.proc.poll() is None, f"run_service exited:\n{self.output()[-6000:]}"
            return any(line.startswith(prefix) for line in list(self.lines))

        try:
            wait_until(found, timeout, f"a line starting with {prefix!r}", interval=0.2)
        except TimeoutError:
            raise AssertionError(f"no {prefix!r} line:\n{self.output()[-6000:]}") from None
        return next(line for line in self.lines if line.startswith(prefix))

    def finish(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(10)
        return code

    def started(self) -> dict[str, int]:
        return {m[1]: int(m[2]) for line in self.lines if (m := STARTED.match(line))}

    def cleanup(self) -> None:
        """After a failed test: leave nothing running."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in self.started().values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def make_run_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of `make run` on a machine with no Redis on the configured URL."""
    settings = {
        # A configured key: make run would otherwise write .dev-secrets.toml into the project
        # folder (tests/unit/scripts/test_run_service.py covers that on a temporary file).
        **signing_env(),
        "MLOPS_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        "MLOPS_ARTIFACTS_DIR": str(tmp_path / "artifacts"),
        "MLOPS_GATEWAY__PORT": str(free_port()),
        "MLOPS_FLOWER__PORT": str(free_port()),
        "MLOPS_WORKER__METRICS_PORT": str(free_port()),
    }
    return child_env(inherit_settings=False, **{**settings, **extra})


@pytest.fixture
def run_service():
    started: list[RunService] = []

    def start(env: dict[str, str], *args: str) -> RunService:
        service = RunService(env, *args)
        started.append(service)
        return service

    yield start
    for service in started:
        service.cleanup()


def test_make_run_serves_the_printed_curl_and_stops_everything_on_ctrl_c(tmp_path, run_service):
    env = make_run_env(tmp_path)
    service = run_service(env, "--ready-timeout", "240")
    curl = service.wait_for_line("curl ", timeout=300)

    # The exact command a user would paste.
    answer = subprocess.run(
        [*shlex.split(curl), "-w", "\n%{http_code}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    body, status = answer.stdout.rsplit("\n", 1)
    assert status == "200", answer.stdout + answer.stderr
    result = json.loads(body)
    assert result["status"] == "SUCCESS"
    assert result["request_id"] == "integration-test-id"
    assert result["predictions"] == ["setosa"]
    assert result["model_version"] == 1

    output = service.output()
    assert f"http://127.0.0.1:{env['MLOPS_GATEWAY__PORT']}/docs" in output
    assert f"http://127.0.0.1:{env['MLOPS_FLOWER__PORT']}" in output
    assert "for this run only" in output
    started = service.started()
    assert {"redis", "train", "worker", "beat", "flower", "gateway"} <= set(started)
    redis_pid, redis_url = next(
        (int(m[1]), m[2]) for line in service.lines if (m := PRIVATE_REDIS.match(line))
    )
    assert redis_url != env["MLOPS_REDIS_URL"]
    assert redis.Redis.from_url(redis_url).ping()
    run_dir = Path(next(m[1] for line in service.lines if (m := RUN_DIR.search(line))))
    assert run_dir.is_dir()

    service.proc.send_signal(signal.SIGINT)
    assert service.finish(timeout=120) == 0, service.output()[-6000:]

    leftovers = {name: group_members(pid) for name, pid in started.items()}
    assert all(not pids for pids in leftovers.values()), leftovers
    assert redis_pid == started["redis"]
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(redis_url, socket_connect_timeout=2).ping()
    assert not run_dir.exists()
    assert "==> stopped" in service.output()


def test_a_child_that_dies_stops_the_others_and_fails_with_its_last_lines(tmp_path, run_service):
    # Flower refuses to start: a password without a user name (flowerconfig.py).
    env = make_run_env(tmp_path, MLOPS_FLOWER__USER="", MLOPS_FLOWER__PASSWORD="pw")
    service = run_service(env, "--ready-timeout", "240")
    code = service.finish(timeout=300)
    output = service.output()
    assert code != 0, output[-6000:]
    assert "flower exited unexpectedly" in output
    summary = output[output.index("flower exited unexpectedly") :]
    assert "basic auth needs a user name" in summary
    for name, pid in service.started().items():
        assert not group_members(pid), name


def test_without_redis_or_redis_server_it_says_how_to_install_redis(tmp_path, run_service):
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    env = make_run_env(tmp_path, PATH=str(empty_bin))  # no redis-server on PATH
    service = run_service(env)
    code = service.finish(timeout=120)
    output = service.output()
    assert code != 0, output
    assert "redis-server is not installed" in output
    assert "apt-get install redis-server" in output
    assert "MLOPS_REDIS_URL" in output
    assert service.started() == {}

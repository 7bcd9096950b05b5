"""The whole service for integration tests: private redis-server, real workers, real gateway.

Every part runs as the same command `make run` and the containers use (scripts/commands.py),
with the process toolkit `make run` and `make bench` use (scripts/processes.py).
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import httpx

from core.messages import MONITOR_TASK, celery_message
from core.store import ModelStore
from scripts import commands
from scripts.processes import ROOT, Process, RedisServer, free_port, wait_until
from tests.factories import SETOSA, log_predictions, scrape, service_env, store_at

PREDICT_KEY = "test-predict-key"
OTHER_PREDICT_KEY = "test-other-predict-key"  # another client with the same scope
ADMIN_KEY = "test-admin-key"
API_KEYS = json.dumps(
    {PREDICT_KEY: ["predict"], OTHER_PREDICT_KEY: ["predict"], ADMIN_KEY: ["admin"]}
)

LOAD_BODY = {"request_id": "load", "instances": [SETOSA]}
SEED_BODY = {
    "request_id": "integration-test-id",
    "sepal_length": 5.1,
    "sepal_width": 3.5,
    "petal_length": 1.4,
    "petal_width": 0.2,
}


class Stack:
    def __init__(
        self, workdir: Path, *, appendonly: bool = False, redis_args=None, redis=None, **env: str
    ):
        """``redis``: another Redis than a private RedisServer (tests/integration/sentinel.py)."""
        self.workdir = Path(workdir)
        self.artifacts = self.workdir / "artifacts"
        self.logs = self.workdir / "logs"
        self.redis = redis or RedisServer(
            self.workdir / "redis", appendonly=appendonly, extra=redis_args
        )
        self.extra_env = {"MLOPS_AUTH__API_KEYS": f"@json {API_KEYS}", **env}
        self.services: dict[str, Process] = {}
        self.gateway_address = "127.0.0.1"
        self.gateway_port: int | None = None

    # -- processes ------------------------------------------------------------------------
    def env(self, **extra: str) -> dict[str, str]:
        return service_env(self.redis.url, self.artifacts, **{**self.extra_env, **extra})

    def start_redis(self) -> Stack:
        self.redis.start()
        return self

    def train(self, *args: str, on: Sequence[str] = (), **env: str) -> subprocess.CompletedProcess:
        """`python -m training train --force` (or another CLI command) against this stack's
        store: a new version each time, as these tests want, even with nothing new to learn."""
        return subprocess.run(
            [*on, sys.executable, "-m", "training", *(args or ("train", "--force"))],
            cwd=ROOT,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def start_worker(
        self,
        name: str = "worker",
        queues: str | None = None,
        concurrency: int = 1,
        wait: bool = True,
        on: Sequence[str] = (),
        **env: str,
    ) -> Process:
        """``on``: a command that runs it on another host (tests/integration/netns.py)."""
        args = [*on, *commands.worker(queues, concurrency), "--hostname", f"{name}@%h"]
        service = Process(name, args, self.env(**env), self.logs).start()
        self.services[name] = service
        if wait:
            self.wait_for_worker(service)
        return service

    def wait_for_worker(self, service: Process, timeout: float = 60) -> None:
        """Wait for the worker log to say ready and a fresh heartbeat in Redis."""
        node = f"{service.name}@{socket.gethostname()}"

        def heartbeat() -> bool:
            assert service.alive(), f"{service.name} exited:\n{service.output()[-3000:]}"
            beats = [json.loads(v) for v in self.redis.client().hgetall("mlops:workers").values()]
            fresh = [b for b in beats if b.get("node") == node and b["ts"] > time.time() - 5]
            return bool(fresh) and "ready" in service.output()

        wait_until(heartbeat, timeout, f"worker {service.name}")

    def start_beat(self) -> Process:
        """`celery -A workers beat`, its schedule file in the stack's folder."""
        args = commands.beat(str(self.workdir / "celerybeat-schedule"))
        service = Process("beat", args, self.env(), self.logs).start()
        self.services["beat"] = service
        return service

    def start_gateway(
        self, address: str = "127.0.0.1", on: Sequence[str] = (), **env: str
    ) -> Process:
        """The gateway, with public keys only: it verifies versions, it never signs one.
        ``address``/``on``: where it listens, and a command that runs it elsewhere."""
        self.gateway_address, self.gateway_port = address, free_port()
        args = [*on, *commands.gateway(address, self.gateway_port)]
        env = {"MLOPS_SIGNING__PRIVATE_KEY": "", **env}
        service = Process("gateway", args, self.env(**env), self.logs).start()
        self.services["gateway"] = service

        def healthy() -> bool:
            assert service.alive(), f"gateway exited:\n{service.output()[-3000:]}"
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200

        wait_until(healthy, 30, "gateway /health")
        return service

    def start(self, workers: int = 1, concurrency: int = 1) -> Stack:
        """Redis, a first model, `workers` worker processes and the gateway, all ready."""
        self.start_redis()
        result = self.train()
        assert result.returncode == 0, result.stderr
        for i in range(workers):
            self.start_worker(f"worker{i}", concurrency=concurrency)
        self.start_gateway()
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        wait_until(
            lambda: httpx.get(f"{self.url}/ready", timeout=2).status_code == 200,
            timeout,
            "gateway /ready",
        )

    def stop(self) -> None:
        for service in reversed(list(self.services.values())):
            service.stop()
        self.redis.stop()

    # -- clients --------------------------------------------------------------------------
    def store(self) -> ModelStore:
        """This stack's model store as its services open it (format, the session's keys)."""
        return store_at(
            self.artifacts, "iris", self.extra_env.get("MLOPS_TRAINING__ARTIFACT_FORMAT")
        )

    @property
    def url(self) -> str:
        return f"http://{self.gateway_address}:{self.gateway_port}"

    def client(self, key: str | None = PREDICT_KEY, **kwargs) -> httpx.Client:
        headers = {"X-API-Key": key} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)

    def admin(self) -> httpx.Client:
        return self.client(ADMIN_KEY)

    def metrics(self) -> list[tuple[str, dict, float]]:
        """The samples of the gateway's /metrics."""
        return scrape(f"{self.url}/metrics")

    def log_predictions(self, model: str, version: int, rows: list, outputs: list) -> None:
        """Write predict jobs into ``model``'s prediction log, ten rows a job (as its writer
        would: tests/factories.py log_predictions)."""
        client = self.redis.client()
        for start in range(0, len(rows), 10):
            end = start + 10
            log_predictions(client, model, version, rows[start:end], outputs[start:end])

    def check_drift(self, model: str = "iris", queue: str = "predict", timeout: float = 30) -> dict:
        """Queue a drift check of ``model`` as beat would, and wait for the gateway to show
        its result: GET /models/{model}/monitoring's body."""
        _, payload = celery_message(MONITOR_TASK, [model], queue=queue)
        with self.client() as client:
            before = (client.get(f"/models/{model}/monitoring").json()["latest"] or {}).get(
                "checked_at", 0
            )
            self.redis.client().lpush(queue, payload)
            found: dict = {}

            def checked() -> bool:
                found.update(client.get(f"/models/{model}/monitoring").json())
                return (found["latest"] or {}).get("checked_at", 0) > before

            wait_until(checked, timeout, f"a drift check of {model}")
        return found

    def logs_text(self) -> str:
        return "\n".join(f"--- {n}\n{s.output()[-4000:]}" for n, s in self.services.items())


@contextlib.contextmanager
def running(stack: Stack, start: Callable[[Stack], object] = Stack.start) -> Iterator[Stack]:
    """``stack`` started by ``start`` (its logs printed if that fails), stopped at the end: the
    body of every stack fixture, and of tests that need a stack of their own."""
    try:
        start(stack)
    except BaseException:
        print(stack.logs_text())  # noqa: T201 - shown by pytest on failure
        stack.stop()
        raise
    try:
        yield stack
    finally:
        stack.stop()


class LoadLoop:
    """Async predictions in a background thread while a fault happens; remembers every answer.

    ``accepted`` holds the job ids answered 202; ``statuses`` counts every HTTP status (and
    "error" for a request that got no answer, which must not happen either).
    """

    def __init__(self, stack: Stack, interval: float = 0.02):
        self.stack, self.interval = stack, interval
        self.accepted: list[str] = []
        self.statuses: dict[object, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.stack.client() as client:
            while not self._stop.is_set():
                try:
                    response = client.post("/predict", json=LOAD_BODY)
                    status: object = response.status_code
                    if status == 202:
                        self.accepted.append(response.json()["job_id"])
                except httpx.HTTPError:
                    status = "error"
                self.statuses[status] = self.statuses.get(status, 0) + 1
                self._stop.wait(self.interval)

    def __enter__(self) -> LoadLoop:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(15)


def poll_job(client: httpx.Client, job_id: str, timeout: float = 30) -> dict:
    """GET /jobs/{id} until it is SUCCESS or FAILURE."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/jobs/{job_id}").json()
        if body["status"] in ("SUCCESS", "FAILURE"):
            return body
        time.sleep(0.05)
    raise TimeoutError(f"job {job_id} not finished after {timeout}s: {body}")

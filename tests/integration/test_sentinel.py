"""Redis Sentinel for real: a primary, a replica and three sentinels (tests/integration/
sentinel.py); the primary SIGKILLed under a load of predictions; every part follows the
new primary by itself and no accepted job is left PENDING."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from scripts import commands
from scripts.processes import Process, wait_until
from tests.integration.sentinel import SentinelGroup
from tests.integration.stack import SEED_BODY, Stack, poll_job, running

pytestmark = [pytest.mark.integration, pytest.mark.serial]

LOAD_CLIENTS = 4


class Load:
    """Clients POSTing /predict in a loop (async, 202), each answer kept with its time."""

    def __init__(self, stack: Stack):
        self.stack = stack
        self.answers: list[tuple[float, int, str | None]] = []  # (time, status, job id)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(LOAD_CLIENTS)]

    def _run(self) -> None:
        with self.stack.client() as client:
            while not self._stop.is_set():
                try:
                    response = client.post("/predict", json=SEED_BODY)
                    body = response.json()
                    self.answers.append(
                        (time.monotonic(), response.status_code, body.get("job_id"))
                    )
                except httpx.HTTPError:
                    self.answers.append((time.monotonic(), 0, None))
                time.sleep(0.01)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def accepted(self) -> list[str]:
        return [job for _, status, job in self.answers if status == 202 and job]

    def since(self, moment: float) -> list[int]:
        return [status for at, status, _ in self.answers if at >= moment]

    def recovered(self, moment: float, count: int = 20) -> bool:
        """The last ``count`` answers came after ``moment`` and were all 202."""
        last = self.answers[-count:]
        return len(last) == count and all(at > moment and s == 202 for at, s, _ in last)


@contextlib.contextmanager
def sentinel_stack(workdir: Path, **env: str) -> Iterator[Stack]:
    stack = Stack(workdir, redis=SentinelGroup(workdir / "redis"), **env)
    with running(stack, start=lambda s: s.start(workers=1, concurrency=2)) as started:
        yield started


def test_a_failover_under_load_loses_no_job_silently(tmp_path):
    with sentinel_stack(tmp_path) as stack, Load(stack) as load:
        group = stack.redis
        wait_until(lambda: len(load.accepted()) >= 40, 15, "some accepted jobs")
        group.kill_primary()
        killed_at = time.monotonic()
        group.wait_failover()
        failed_over = time.monotonic()
        # the gateway reconnects by itself: new requests are accepted again
        wait_until(lambda: load.recovered(failed_over), 20, "requests accepted after failover")
        recovered = time.monotonic()
        time.sleep(1.0)
        load.stop()
        finish(stack, load, killed_at, failed_over, recovered)


def finish(stack: Stack, load: Load, killed_at: float, failed_over: float, recovered: float):
    assert all(status == 202 for status in load.since(recovered)), load.since(recovered)
    assert all(status in (202, 503, 0) for _, status, _ in load.answers)

    outcomes: dict[str, int] = {}
    with stack.client() as client:
        for job_id in load.accepted():
            response = client.get(f"/jobs/{job_id}")
            if response.status_code == 404:  # lost with the primary (README: what a failover loses)
                outcomes["404"] = outcomes.get("404", 0) + 1
                continue
            record = poll_job(client, job_id, timeout=45)  # the last audit: 3 x 12 s
            status = record["status"]
            if status == "FAILURE":  # explicit, with a reason (lost_in_failover: resubmit)
                status = f"FAILURE {record['error']['reason']}"
            outcomes[status] = outcomes.get(status, 0) + 1
        # the worker that lived through the failover serves a new job
        assert client.post("/predict?wait=10", json=SEED_BODY).status_code == 200
    print(  # noqa: T201 - the figures, shown with -s
        f"failover took {failed_over - killed_at:.1f}s; service back after "
        f"{recovered - killed_at:.1f}s; accepted jobs: {outcomes}"
    )
    assert outcomes.get("SUCCESS", 0) >= 40
    assert set(outcomes) <= {"SUCCESS", "FAILURE lost_in_failover", "FAILURE task_failed", "404"}


def test_a_wrong_sentinel_list_stops_every_part_at_start_naming_it(tmp_path):
    url = "sentinel://:hunter2@127.0.0.1:1,127.0.0.1:2/mymaster"
    env = Stack(tmp_path).env(MLOPS_REDIS_URL=url)
    for name, args in (
        ("gateway", commands.gateway("127.0.0.1", 0)),
        ("worker", commands.worker(None, 1)),
    ):
        process = Process(name, args, env, tmp_path / "logs").start()
        wait_until(lambda p=process: not p.alive(), 30, f"{name} to exit")
        output = process.output()
        assert "no sentinel of sentinel://:***@127.0.0.1:1,127.0.0.1:2/mymaster" in output, output
        assert "hunter2" not in output
        assert not re.search(r"\bready\.", output) and "Uvicorn running" not in output


def test_with_replica_ack_a_job_is_accepted_only_once_a_replica_has_it(tmp_path):
    stack_env = {"MLOPS_API__REPLICA_ACK_MS": "500"}
    with sentinel_stack(tmp_path, **stack_env) as stack, stack.client() as client:
        assert client.post("/predict?wait=10", json=SEED_BODY).status_code == 200
        stack.redis.replica.freeze()  # the replica stops acknowledging
        try:
            started = time.monotonic()
            response = client.post("/predict", json=SEED_BODY)
            waited = time.monotonic() - started
        finally:
            stack.redis.replica.thaw()
        body = response.json()
        assert response.status_code == 503, body
        assert body["reason"] == "outcome_unknown"
        assert "no replica acknowledged the job within 500 ms" in body["detail"]
        assert waited >= 0.5
        # on the primary all the same: it runs (the client may poll it, or retry with an
        # Idempotency-Key)
        job_id = re.search(r"job (\S+) may", body["detail"]).group(1)
        assert poll_job(client, job_id)["status"] == "SUCCESS"

"""Fault tests: real redis-server, real worker processes, real HTTP, things broken on purpose.

The guarantees they check are written down in docs/guarantees.md. Stacks are shared where a
test leaves things healthy (`faulty`, `steady`); tests that leave a mess get their own.
Short limits everywhere (predict time limit 8 s, Redis timeout 1 s); recovery from a dead
worker node runs with the shipped settings (visibility timeout 10 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest
from celery import Celery

from core.messages import PREDICT_QUEUE, RETRAIN_TASK, TRAIN_QUEUE
from core.prediction_log import flushed_key
from core.store import Aliases
from scripts.load import generator_name, run_load
from scripts.processes import ROOT, children, status_kib, wait_until
from tests.attacker import code_running_pickle, replace_artifact
from tests.factories import SETOSA
from tests.integration.faulty_model import (
    HUNG,
    POISON,
    SLOW,
    faulty_template,
)
from tests.integration.proxy import ScriptReplyDelay
from tests.integration.stack import (
    ADMIN_KEY,
    PREDICT_KEY,
    SEED_BODY,
    LoadLoop,
    Stack,
    poll_job,
    running,
)
from workers.batches import STARTED_MARK_ROWS
from workers.recovery import UNACKED_KEY

pytestmark = pytest.mark.integration

FAULT_ENV = {
    "MLOPS_WORKER__PREDICT_TIME_LIMIT": "8",  # a fresh pool child loads the model in ~2 s
    "MLOPS_WORKER__RETRAIN_TIME_LIMIT": "10",
    "MLOPS_API__REDIS_TIMEOUT_SECONDS": "1",
    "MLOPS_WORKER__METRICS_PORT": "0",  # stacks run side by side
    "PYTHONPATH": str(ROOT),  # the worker unpickles tests.integration.faulty_model
}
TERMINAL = ("SUCCESS", "FAILURE")


def row_body(row: list[float], request_id: str = "fault-test") -> dict:
    return {"request_id": request_id, "instances": [row]}


# -- helpers -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    return faulty_template(tmp_path_factory.mktemp("template"))


def boot(template: Path, *, worker: bool = True, gateway: bool = True) -> Callable[[Stack], None]:
    """How these tests start a stack: Redis, the template's artifacts, a worker (concurrency 1)
    and the gateway."""

    def start(stack: Stack) -> None:
        stack.start_redis()
        shutil.copytree(template, stack.artifacts)
        if worker:
            stack.start_worker("worker0")
        if gateway:
            stack.start_gateway()
        if worker and gateway:
            stack.wait_ready()

    return start


def pool_children(service) -> list[int]:
    """Pids of the worker's pool processes (children of its main process)."""
    return children(service.pid)


def rss_kib(pid: int) -> int:
    return status_kib(pid, "VmRSS")


def submit(client: httpx.Client, row: list[float] = SETOSA, **params) -> str:
    response = client.post("/predict", json=row_body(row), params=params)
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def submit_slow(client: httpx.Client, seconds: float) -> str:
    """A job that sleeps in the model; 256 rows, so the worker marks it STARTED (small
    messages finish too fast for that round trip to be worth it, workers/batches.py)."""
    rows = [[SLOW, seconds, 1.4, 0.2]] + [SETOSA] * (STARTED_MARK_ROWS - 1)
    response = client.post("/predict", json={"request_id": "slow", "instances": rows})
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def wait_started(client: httpx.Client, job_id: str, timeout: float = 30) -> None:
    seen = {}

    def started() -> bool:
        seen.update(client.get(f"/jobs/{job_id}").json())
        assert seen["status"] not in TERMINAL, f"finished before it was seen running: {seen}"
        return seen["status"] == "STARTED"

    try:
        wait_until(started, timeout, "STARTED")
    except TimeoutError:
        raise TimeoutError(f"job {job_id} not STARTED after {timeout}s: {seen}") from None


def poll_through_outage(client: httpx.Client, job_id: str, timeout: float = 60) -> dict:
    """poll_job, but a 503 (Redis not back yet for this connection) means: ask again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get(f"/jobs/{job_id}")
        assert response.status_code in (200, 503), response.text
        if response.status_code == 200 and response.json()["status"] in TERMINAL:
            return response.json()
        time.sleep(0.05)
    raise TimeoutError(f"job {job_id} not finished after {timeout}s")


def assert_all_succeed(stack: Stack, job_ids: list[str], timeout: float = 60) -> None:
    assert job_ids, "the load loop had no job accepted"
    with stack.client() as client:
        for job_id in job_ids:
            result = poll_job(client, job_id, timeout)
            assert result["status"] == "SUCCESS", result


# -- a shared stack with the faulty model in production ------------------------------------
@pytest.fixture(scope="module")
def faulty(tmp_path_factory, template):
    stack = Stack(
        tmp_path_factory.mktemp("faulty"),
        **FAULT_ENV,
        # the smallest grace the settings allow: the redelivery bound, 10 + 1 + 1 s
        MLOPS_API__SYNC_GRACE_SECONDS="12",
        MLOPS_WORKER__MAX_RETRIES_ON_CRASH="2",
        # the flusher's cursor (one key per model, kept) is written soon after the warm-up
        MLOPS_PREDICTION_LOG__FLUSH_SECONDS="1",
    )
    with running(stack, boot(template)) as started:
        yield started


def test_killed_child_mid_job_is_redelivered_and_completes(faulty):
    worker = faulty.services["worker0"]
    with faulty.client() as client, LoadLoop(faulty) as load:
        job_id = submit_slow(client, 2.0)
        wait_started(client, job_id)
        wait_until(lambda: len(pool_children(worker)) == 1, 20, "a pool child")
        (child,) = pool_children(worker)
        os.kill(child, signal.SIGKILL)
        result = poll_job(client, job_id, 60)
    assert result["status"] == "SUCCESS", result
    assert result["predictions"][0] in result["classes"]
    assert child not in pool_children(worker)
    assert "WorkerLostError" in worker.output() or "signal 9" in worker.output()
    assert load.statuses.keys() == {202}, load.statuses
    assert_all_succeed(faulty, load.accepted)


def test_poison_job_ends_in_failure_after_max_retries_on_crash(faulty):
    with faulty.client() as client:
        poison = submit(client, [POISON, 3.0, 1.4, 0.2])
        healthy = submit(client)
        result = poll_job(client, poison, 90)
        assert result["status"] == "FAILURE", result
        assert result["error"]["reason"] == "worker_lost"
        assert "died 3 times" in result["error"]["message"]  # max_retries_on_crash=2, then stop
        assert poll_job(client, healthy, 30)["status"] == "SUCCESS"
        after = client.post("/predict", params={"wait": 20}, json=row_body(SETOSA))
    assert after.status_code == 200, after.text
    assert after.json()["status"] == "SUCCESS"


def test_hung_task_hits_the_time_limit_and_the_child_is_replaced(faulty):
    worker = faulty.services["worker0"]
    wait_until(lambda: len(pool_children(worker)) == 1, 20, "a pool child")
    (before,) = pool_children(worker)
    with faulty.client() as client:
        job_id = submit(client, [HUNG, 3.0, 1.4, 0.2])
        started = time.monotonic()
        result = poll_job(client, job_id, 30)
        elapsed = time.monotonic() - started
        assert result["status"] == "FAILURE", result
        assert result["error"]["reason"] == "time_limit"
        assert elapsed < 8 + 5, elapsed  # the 8 s hard limit plus a margin
        wait_until(lambda: pool_children(worker) and before not in pool_children(worker), 20, "new")
        after = client.post("/predict", params={"wait": 20}, json=row_body(SETOSA))
    assert after.status_code == 200, after.text
    assert after.json()["status"] == "SUCCESS"
    assert before not in pool_children(worker)


@pytest.mark.serial
def test_a_sync_job_not_started_before_its_deadline_ends_expired(faulty):
    """Its deadline is wait (1 s) + grace (12 s); three 5.5 s messages run first, one at a time
    (one pool process, prefetch 1), each under the 8 s time limit."""
    with faulty.client() as client:
        blockers = [submit_slow(client, 5.5)]
        wait_started(client, blockers[0])
        blockers += [submit_slow(client, 5.5) for _ in range(2)]
        response = client.post("/predict", params={"wait": 1}, json=row_body(SETOSA))
        assert response.status_code == 202, response.text  # not started within the wait
        result = poll_job(client, response.json()["job_id"], 60)
        assert [poll_job(client, b, 30)["status"] for b in blockers] == ["SUCCESS"] * 3
    assert result["status"] == "FAILURE", result
    assert result["error"]["reason"] == "expired"
    assert "deadline" in result["error"]["message"]


def test_idempotency_key_gives_one_job_and_refuses_another_body(faulty):
    key = {"Idempotency-Key": f"order-{time.time_ns()}"}
    body = row_body(SETOSA, "idem")

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            base_url=faulty.url, headers={"X-API-Key": PREDICT_KEY, **key}, timeout=30
        ) as client:
            return await asyncio.gather(*(client.post("/predict", json=body) for _ in range(10)))

    responses = asyncio.run(burst())  # 200: the job finished before that request came in
    assert {r.status_code for r in responses} <= {200, 202}, [r.text for r in responses]
    job_ids = {r.json()["job_id"] for r in responses}
    assert len(job_ids) == 1, job_ids
    (job_id,) = job_ids
    with faulty.client() as client:
        first = poll_job(client, job_id)
        replay = client.post("/predict", json=body, headers=key, params={"wait": 5})
        conflict = client.post("/predict", json=row_body([6.0, 3.0, 4.5, 1.5]), headers=key)
    with faulty.admin() as admin:  # keys are scoped per API key: another client, another job
        other = admin.post("/predict", json=body, headers=key)
    assert replay.status_code == 200, replay.text
    assert replay.json()["job_id"] == job_id
    assert replay.json()["predictions"] == first["predictions"]
    assert replay.headers["idempotent-replayed"] == "true"
    assert conflict.status_code == 409, conflict.text
    assert "different body" in conflict.json()["detail"]
    assert other.status_code == 202
    assert other.json()["job_id"] != job_id


def _redis_snapshot(client) -> dict:
    """Redis as clients see it; ``client`` is the one connection the test itself uses."""
    return {
        "subscribers": client.pubsub_numsub("mlops:results")[0][1],
        "channels": sorted(client.pubsub_channels()),
        "clients": len(client.client_list()),
        "keys_without_ttl": sorted(k for k in client.scan_iter("*") if client.ttl(k) == -1),
    }


def _sync_requests(stack: Stack, count: int, concurrency: int = 32) -> list[dict]:
    async def run() -> list[dict]:
        limit = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(
            base_url=stack.url, headers={"X-API-Key": PREDICT_KEY}, timeout=30
        ) as client:

            async def one(i: int) -> dict:
                # A connection the server closes as a request goes out (a keep-alive race on a
                # loaded machine) is retried as clients are told to: with the same key.
                headers = {"Idempotency-Key": f"leak-{i}"}
                body = row_body(SETOSA, f"leak-{i}")
                async with limit:
                    try:
                        response = await client.post(
                            "/predict", params={"wait": 20}, json=body, headers=headers
                        )
                    except (httpx.ReadError, httpx.RemoteProtocolError):
                        response = await client.post(
                            "/predict", params={"wait": 20}, json=body, headers=headers
                        )
                    assert response.status_code == 200, response.text
                    return response.json()

            return await asyncio.gather(*(one(i) for i in range(count)))

    return asyncio.run(run())


POOL_SLACK = 3


@pytest.mark.serial
def test_a_thousand_jobs_leave_no_subscription_or_connection_behind(faulty):
    _sync_requests(faulty, 200)  # warm-up: connection pools reach their working size
    observer = faulty.redis.client()
    # the log's flush cursor is one key per model for good, written at the first flush
    wait_until(lambda: observer.exists(flushed_key("iris")), 10, "the first flush")
    time.sleep(0.5)
    baseline = _redis_snapshot(observer)
    results = _sync_requests(faulty, 1000)
    assert all(r["status"] == "SUCCESS" for r in results)
    assert len({r["job_id"] for r in results}) == 1000
    # A leak grows with the jobs (1,000 here); a pool that meets a new peak of concurrency
    # (a worker child's heartbeat thread and its task both writing) adds one or two, once.
    limit = baseline["clients"] + POOL_SLACK
    wait_until(lambda: _redis_snapshot(observer)["clients"] <= limit, 10, "clients")
    after = _redis_snapshot(observer)
    assert after["subscribers"] == baseline["subscribers"] == 1  # one listener per gateway
    assert after["channels"] == baseline["channels"]
    assert after["keys_without_ttl"] == baseline["keys_without_ttl"]  # job keys all expire


def predicted_version(client: httpx.Client) -> int:
    response = client.post("/predict", params={"wait": 20}, json=row_body(SETOSA))
    assert response.status_code == 200, response.text
    return response.json()["model_version"]


def force_production(stack: Stack, version: int, previous: int) -> None:
    """Write aliases.json as someone with write access to the store would: no checks at all."""
    forged = Aliases(production=version, history=[previous]).model_dump_json().encode()
    stack.store().storage.update_aliases("iris", lambda _raw: forged)


def assert_refused_everywhere(stack: Stack, version: int, serving: int) -> None:
    """Promote answers 409; forced into the alias anyway, the worker refuses it and serves on."""
    with stack.admin() as admin:
        refused = admin.post(f"/models/{version}/promote")
        assert refused.status_code == 409, refused.text
        assert refused.json()["reason"] == "integrity_check_failed"
        assert admin.get("/models").json()["production_version"] == serving
        assert predicted_version(admin) == serving

        force_production(stack, version, serving)
        worker = stack.services["worker0"]
        wait_until(lambda: f"refusing model iris v{version}" in worker.output(), 10, "refusal")
        assert predicted_version(admin) == serving
    stack.store().promote(serving)  # the alias back as it was


def test_tampered_artifacts_are_refused_and_the_previous_version_keeps_serving(faulty, tmp_path):
    """Tampered bytes; then an artifact AND its sha256 rewritten to agree (which passed before
    versions were signed): neither is promoted, and forced into the alias neither is loaded."""
    store = faulty.store()
    serving = store.production_version()
    meta, data = store.read_artifact(1)
    marker = tmp_path / "attacker-code-ran"

    def folder(version: int) -> Path:
        return faulty.artifacts / "iris" / str(version)

    try:
        tampered = store.register(data, meta).version  # a signed copy of v1, then changed
        artifact = folder(tampered) / meta.artifact_file
        artifact.write_bytes(artifact.read_bytes() + b"tampered")
        assert_refused_everywhere(faulty, tampered, serving)

        rewritten = store.register(data, meta).version
        replace_artifact(folder(rewritten), code_running_pickle(marker))
        assert_refused_everywhere(faulty, rewritten, serving)
        assert not marker.exists(), "the worker ran the attacker's pickle"
    finally:
        store.promote(serving)


# -- a shared stack for faults it recovers from ------------------------------------------------
@pytest.fixture(scope="module")
def steady(tmp_path_factory, template):
    def start(stack: Stack) -> None:
        boot(template)(stack)
        stack.store().promote(1)  # the well-behaved model

    with running(Stack(tmp_path_factory.mktemp("steady"), **FAULT_ENV), start) as stack:
        yield stack


def _pool_rss(service) -> int:
    return rss_kib(service.pid) + sum(rss_kib(pid) for pid in pool_children(service))


SOAK_CONNECTIONS = 8  # closed loop: about half of `make bench`'s 16-connection sync rate
SOAK_SECONDS = 60
SOAK_WARMUP = 10


@pytest.fixture
def soak(tmp_path, template):
    """A stack whose gateway logs at WARNING like `make bench`'s, so the rates compare (the
    worker stays at INFO: the fixtures wait for its "ready" line)."""

    def start(stack: Stack) -> None:
        boot(template, gateway=False)(stack)
        stack.store().promote(1)  # the well-behaved model
        stack.start_gateway(MLOPS_LOGGING__LEVEL="WARNING")
        stack.wait_ready()

    with running(Stack(tmp_path / "soak", **FAULT_ENV), start) as stack:
        yield stack


@pytest.mark.serial
@pytest.mark.soak
def test_soak_a_minute_at_half_the_benchmark_rate_without_errors_or_memory_growth(soak):
    """60 s of sync predictions from the benchmark's own load generator (10 s of warm-up, then
    50 s measured): no error, every job SUCCESS, RSS of gateway and worker grows < 10 %."""
    gateway, worker = soak.services["gateway"], soak.services["worker0"]
    url = f"{soak.url}/predict?wait=10"
    body = orjson.dumps(row_body(SETOSA, "soak"))
    headers = {"Content-Type": "application/json", "X-API-Key": PREDICT_KEY}
    warm = run_load(url, body, headers, SOAK_CONNECTIONS, SOAK_WARMUP)
    before = {"gateway": rss_kib(gateway.pid), "worker": _pool_rss(worker)}
    measured = run_load(url, body, headers, SOAK_CONNECTIONS, SOAK_SECONDS - SOAK_WARMUP)
    growth = {
        "gateway": rss_kib(gateway.pid) / before["gateway"] - 1,
        "worker": _pool_rss(worker) / before["worker"] - 1,
    }
    m = measured
    sys.stdout.write(
        f"soak ({generator_name()}): {m['rps']:.0f} req/s, p50 {m['p50_ms']:.1f} ms, "
        f"p99 {m['p99_ms']:.1f} ms, {m['requests']} requests, errors {m['errors']}; "
        f"RSS growth gateway {growth['gateway']:.1%}, worker {growth['worker']:.1%}\n"
    )
    assert warm["errors"] == 0 and measured["errors"] == 0, (warm, measured)
    redis_client = soak.redis.client()

    def soak_statuses() -> Counter:
        keys = list(redis_client.scan_iter("mlops:job:*", count=5000))
        records = [orjson.loads(raw) for raw in redis_client.mget(keys) if raw] if keys else []
        return Counter(r["status"] for r in records if r.get("request_id") == "soak")

    # the last requests of the run may still be in flight when the generator stops
    wait_until(lambda: set(soak_statuses()) <= {"SUCCESS", "FAILURE"}, 30, "the last soak jobs")
    statuses = soak_statuses()
    assert set(statuses) == {"SUCCESS"}, statuses
    assert statuses["SUCCESS"] >= warm["requests"] + measured["requests"]
    assert growth["gateway"] < 0.10, f"gateway RSS grew {growth['gateway']:.1%}"
    assert growth["worker"] < 0.10, f"worker RSS grew {growth['worker']:.1%}"


def test_redis_restart_while_idle_is_503_then_202_and_workers_resume(steady):
    worker = steady.services["worker0"]
    with steady.client() as client:
        steady.redis.stop()
        for _ in range(3):
            started = time.monotonic()
            response = client.post("/predict", json=row_body(SETOSA))
            assert response.status_code == 503, response.text
            assert time.monotonic() - started < 3
            assert response.headers["retry-after"]
        assert client.get("/jobs/anything").status_code == 503
        steady.redis.start()
        wait_until(lambda: client.post("/predict", json=SEED_BODY).status_code == 202, 20, "202")
        result = poll_through_outage(client, submit(client))
    assert result["status"] == "SUCCESS", result
    assert worker.alive()
    steady.wait_ready()


@pytest.mark.serial
def test_frozen_redis_fails_requests_within_their_deadline_then_recovers(steady):
    with steady.client() as client:
        assert client.post("/predict", params={"wait": 10}, json=SEED_BODY).status_code == 200
        steady.redis.freeze()
        try:
            for path, params in (("/predict", {}), ("/predict", {"wait": 5}), ("/jobs/x", None)):
                started = time.monotonic()
                if params is None:
                    response = client.get(path)
                else:
                    response = client.post(path, params=params, json=row_body(SETOSA))
                elapsed = time.monotonic() - started
                assert response.status_code == 503, response.text
                assert "did not answer in time" in response.json()["detail"]
                assert elapsed < 1 + 2.5, elapsed  # api.redis_timeout_seconds=1 plus a margin
        finally:
            steady.redis.thaw()
        wait_until(
            lambda: client.post("/predict", params={"wait": 5}, json=SEED_BODY).status_code == 200,
            30,
            "recovery after thaw",
        )


def test_redis_out_of_memory_is_503_on_submit_and_loses_nothing(steady):
    redis_client = steady.redis.client()
    redis_client.config_set("maxmemory-policy", "noeviction")

    def squeeze() -> bool:
        """Keep maxmemory just above what Redis uses (it moves by several percent): past the
        gateway's 90 % limit (from 80 % it answers 429), with room for the workers' writes."""
        used = int(redis_client.info("memory")["used_memory"])
        redis_client.config_set("maxmemory", str(int(used / 0.96)))
        return load.statuses.get(503, 0) >= 5

    try:
        with LoadLoop(steady, interval=0.005) as load:
            wait_until(squeeze, 60, "503 out of memory", interval=0.3)
            with steady.client() as client:
                refused = client.post("/predict", json=row_body(SETOSA))
            redis_client.config_set("maxmemory", "0")
            wait_until(lambda: load.statuses[202] > 0, 10, "accepted")
            accepted_before = load.statuses[202]
            wait_until(lambda: load.statuses[202] > accepted_before + 5, 20, "202 after OOM")
    finally:
        redis_client.config_set("maxmemory", "0")
    assert refused.status_code == 503, refused.text
    assert "out of memory" in refused.json()["detail"]
    assert refused.headers["retry-after"]
    assert set(load.statuses) <= {202, 429, 503}, load.statuses  # refusals lose nothing
    assert_all_succeed(steady, load.accepted)


# -- a stack whose every part uses skops --------------------------------------------------------
@pytest.fixture(scope="module")
def skops(tmp_path_factory):
    """Training (the first model, the CLI), the worker and the gateway all set to skops."""
    stack = Stack(
        tmp_path_factory.mktemp("skops"), **FAULT_ENV, MLOPS_TRAINING__ARTIFACT_FORMAT="skops"
    )
    with running(stack) as started:
        yield started


def test_skops_artifacts_train_and_serve_end_to_end(skops):
    trained = skops.train("train", "--force")
    assert trained.returncode == 0, trained.stderr
    store = skops.store()
    version = max(store.versions())
    assert version == 2 and store.metadata(version).artifact_format == "skops"
    assert (skops.artifacts / "iris" / str(version) / "model.skops").exists()
    with skops.admin() as admin:
        if store.production_version() != version:  # the gate may keep an equal production
            assert admin.post(f"/models/{version}/promote").status_code == 200

        def served() -> bool:
            response = admin.post("/predict", params={"wait": 10}, json=SEED_BODY)
            return response.json().get("model_version") == version

        wait_until(served, 20, f"skops v{version} served")
        result = admin.post("/predict", params={"wait": 10}, json=SEED_BODY).json()
    assert result["predictions"] == ["setosa"]
    assert "refusing" not in skops.services["worker0"].output()


def test_a_metadata_edit_to_joblib_is_refused_on_a_skops_deployment(skops, tmp_path):
    """The format is the deployment's, not the store's: switching a version to joblib (a
    pickle, with file name and sha256 to match) gets it refused, and its code never runs."""
    store = skops.store()
    serving = store.production_version()
    meta, data = store.read_artifact(serving)
    marker = tmp_path / "attacker-code-ran"
    try:
        version = store.register(data, meta).version
        replace_artifact(skops.artifacts / "iris" / str(version), code_running_pickle(marker))
        assert_refused_everywhere(skops, version, serving)
        assert not marker.exists(), "the worker ran the attacker's pickle"
    finally:
        store.promote(serving)


# -- faults that need a stack of their own ------------------------------------------------------
# A node killed whole (main process and pool, SIGKILL) while it runs a slow job and holds
# prefetched messages. Their jobs come back when the node's renewals stop (workers/recovery.py):
# after the visibility timeout (10 s) plus a sweep (1 s) at most, then run again (the slow one
# for SLOW_SECONDS). The target: every job accepted before the kill SUCCESS within 15 s.
RECOVERY_TARGET = 15.0
SLOW_SECONDS = 2.0
NODE_HOLDS = 6  # the slow job + 5 prefetched messages: one pool process, prefetch multiplier 6
PREFETCHING = {"MLOPS_WORKER__PREFETCH_MULTIPLIER": str(NODE_HOLDS)}


class SyncRequests:
    """Sync predictions (``?wait=25``) in background threads; their answers once joined."""

    def __init__(self, stack: Stack, count: int):
        self.stack = stack
        self.responses: list[httpx.Response] = []
        self._threads = [threading.Thread(target=self._one, args=(i,)) for i in range(count)]
        for thread in self._threads:
            thread.start()

    def _one(self, i: int) -> None:
        with self.stack.client() as client:
            body = row_body(SETOSA, f"sync-{i}")
            self.responses.append(client.post("/predict", params={"wait": 25}, json=body))

    def answers(self) -> list[httpx.Response]:
        for thread in self._threads:
            thread.join(60)
        return self.responses


@dataclass
class Kill:
    at: float  # time.time() of the SIGKILL
    accepted_before: list[str]  # async job ids accepted before it
    sync: SyncRequests
    load: LoadLoop


def held_messages(stack: Stack) -> int:
    """Messages delivered and not yet acknowledged (kombu's `unacked` hash), all nodes."""
    return stack.redis.client().hlen(UNACKED_KEY)


@contextlib.contextmanager
def node_killed_while_holding(stack: Stack, node: str) -> Iterator[Kill]:
    """``node``, the only one consuming predict, runs a slow job and holds NODE_HOLDS messages
    (three sync requests and async ones from a load loop that keeps running); then its whole
    process group gets SIGKILL."""
    with stack.client() as client:
        slow = submit_slow(client, SLOW_SECONDS)
        wait_started(client, slow)
        sync = SyncRequests(stack, 3)
        wait_until(lambda: held_messages(stack) >= 2, 10, "the sync requests delivered")
        with LoadLoop(stack) as load:
            wait_until(lambda: held_messages(stack) == NODE_HOLDS, 10, f"{node} holding")
            stack.services[node].kill()
            killed = time.time()
            accepted_before = [slow, *load.accepted]
            assert client.get(f"/jobs/{slow}").json()["status"] == "STARTED"  # killed mid-job
            yield Kill(killed, accepted_before, sync, load)
        assert set(load.statuses) == {202}, load.statuses
        assert_all_succeed(stack, load.accepted)


def last_success(stack: Stack, kill: Kill) -> float:
    """Wait for every job accepted before the kill; all SUCCESS; the latest completion time."""
    sync_answers = kill.sync.answers()
    # the sync clients were answered within their wait, the node's death notwithstanding
    assert [(r.status_code, r.json()["status"]) for r in sync_answers] == [(200, "SUCCESS")] * 3
    with stack.client() as client:
        results = [poll_job(client, job_id, 60) for job_id in kill.accepted_before]
    assert [r["status"] for r in results] == ["SUCCESS"] * len(results), results
    return max(r["completed_at"] for r in [*results, *(a.json() for a in sync_answers)])


def start_consuming(stack: Stack, node: str, queue: str) -> None:
    """Remote control, as `celery control add_consumer`: ``node`` starts consuming ``queue``."""
    app = Celery("control", broker=stack.redis.url)
    app.conf.update(accept_content=["json"], task_serializer="json", result_serializer="json")
    try:
        replies = app.control.add_consumer(
            queue, destination=[f"{node}@{socket.gethostname()}"], reply=True, timeout=5
        )
    finally:
        app.close()
    assert replies and "ok" in next(iter(replies[0].values())), replies


@pytest.mark.serial
def test_a_node_killed_whole_has_its_jobs_finished_by_another_node_within_15_s(tmp_path, template):
    """Node B consumes only `train` until A holds its messages, so which node holds what is
    certain; it takes predict on right after the kill, long before A's messages are due."""
    with running(Stack(tmp_path, **FAULT_ENV), boot(template, worker=False)) as stack:
        stack.start_worker("node_a", **PREFETCHING)
        stack.start_worker("node_b", queues=TRAIN_QUEUE)
        stack.wait_ready()
        with node_killed_while_holding(stack, "node_a") as kill:
            start_consuming(stack, "node_b", PREDICT_QUEUE)
            recovery = last_success(stack, kill) - kill.at
        sys.stdout.write(
            f"node killed whole, another node running: {len(kill.accepted_before)} async + 3 sync "
            f"jobs accepted before the kill, the last SUCCESS {recovery:.1f} s after it\n"
        )
        assert recovery <= RECOVERY_TARGET, recovery
        assert held_messages(stack) == 0  # nothing left behind in kombu's unacked hash


def test_whole_worker_killed_and_restarted_every_accepted_job_completes(tmp_path, template):
    """The only node dies whole; a replacement starts 2 s later. With the shipped settings, not
    a shortened visibility timeout: before workers renewed their messages (10 s timeout since),
    the timeout was an hour, and these jobs waited for it."""
    with running(Stack(tmp_path, **FAULT_ENV), boot(template, worker=False)) as stack:
        stack.start_worker("worker0", **PREFETCHING)
        stack.wait_ready()
        with node_killed_while_holding(stack, "worker0") as kill:
            time.sleep(2)
            replaced = time.time()
            stack.start_worker("replacement")  # a name of its own: worker0's log says "ready"
            ready = time.time() - replaced
            recovery = last_success(stack, kill) - replaced
        sys.stdout.write(
            f"node killed whole, replaced {replaced - kill.at:.1f} s later: the last of "
            f"{len(kill.accepted_before)} async + 3 sync jobs SUCCESS {recovery:.1f} s after "
            f"the replacement started (ready after {ready:.1f} s)\n"
        )
        assert recovery <= RECOVERY_TARGET, recovery


# An MLP fitted for full epochs (no early stop), well past 3 x the 2 s visibility timeout on
# every machine seen: 12000 epochs took 7.5-15 s on one (load-dependent), 30000 only ~5 s on a
# faster one (2026-12-02, where the test then failed its own premise, elapsed > 6 s).
LONG_RETRAIN = {
    "MLOPS_TRAINING__ESTIMATOR__CLASS_PATH": "sklearn.neural_network.MLPClassifier",
    "MLOPS_TRAINING__ESTIMATOR__PARAMS": "@json "
    + orjson.dumps(
        {"hidden_layer_sizes": [64], "max_iter": 60000, "tol": 0.0, "n_iter_no_change": 10**6}
    ).decode(),
}


@pytest.mark.serial
def test_a_retrain_three_visibility_timeouts_long_is_delivered_once(tmp_path, template):
    """Two live nodes on `train`, visibility timeout 2 s (renewed every 0.5 s): a retrain
    several times longer is never put back on its queue, so the idle node never receives it."""
    env = {
        **FAULT_ENV,
        "MLOPS_WORKER__VISIBILITY_TIMEOUT": "2",
        "MLOPS_WORKER__HEARTBEAT_SECONDS": "0.5",
        "MLOPS_WORKER__RETRAIN_TIME_LIMIT": "300",
    }
    with running(Stack(tmp_path, **env), boot(template, worker=False)) as stack:
        nodes = [
            stack.start_worker(name, queues=TRAIN_QUEUE, **LONG_RETRAIN)
            for name in ("train_a", "train_b")
        ]
        versions_before = stack.store().versions()
        with stack.admin() as admin:
            response = admin.post("/retrain", params={"force": "true"})
            assert response.status_code == 202, response.text
            job_id = response.json()["job_id"]
            started = time.monotonic()
            result = poll_job(admin, job_id, 240)
            elapsed = time.monotonic() - started
        # Celery logs the task by its shadow name, the task and its model: mlops.retrain[iris]
        received = [
            n.output().count(f"Task {RETRAIN_TASK}[iris][{job_id}] received") for n in nodes
        ]
        versions = stack.store().versions()
        sys.stdout.write(f"retrain of {elapsed:.1f} s (visibility 2 s): received {received}\n")
        assert result["status"] == "SUCCESS", result
        assert elapsed > 3 * 2, elapsed
        assert sum(received) == 1, received
        assert len(versions) == len(versions_before) + 1, (versions_before, versions)
        assert "may run twice" not in stack.logs_text()


@pytest.mark.serial
def test_prefetched_messages_given_up_when_redis_restarts_are_not_renewed_forever(
    tmp_path, template
):
    """Redis restarts (append-only file on) while a node runs a slow job and holds prefetched
    messages. Celery gives the prefetched ones up with the lost connection (they cannot be
    acknowledged on a new one), so the node stops renewing them: they come back by the sweep
    and complete, instead of staying renewed, and PENDING, for as long as the node lives.

    The running message is left out: Celery cancels it, and when recording the cancel fails
    (Redis is down at that instant, most runs) it later takes the child's termination for a
    revoke and acknowledges the message, so its job stays STARTED until it expires. That is
    Celery's (5.7) doing, with or without renewals; see the report on issue #11."""
    with running(
        Stack(tmp_path, appendonly=True, **FAULT_ENV), boot(template, worker=False)
    ) as stack:
        stack.start_worker("worker0", **PREFETCHING)
        stack.wait_ready()
        with stack.client() as client:
            slow = submit_slow(client, SLOW_SECONDS)
            wait_started(client, slow)
            prefetched = [submit(client) for _ in range(NODE_HOLDS - 1)]
            wait_until(lambda: held_messages(stack) == NODE_HOLDS, 10, "worker0 holding")
            stack.redis.stop()
            stack.redis.start()
            assert held_messages(stack) == NODE_HOLDS  # the append-only file kept them
            results = [poll_through_outage(client, job, 60) for job in prefetched]
        assert [r["status"] for r in results] == ["SUCCESS"] * len(prefetched), results
        assert [r["error"] for r in results if "error" in r] == []
        assert held_messages(stack) <= 1  # at most the running one, until it is swept back


@pytest.mark.parametrize("appendonly", [True, False], ids=["appendonly", "no-persistence"])
def test_redis_restarted_with_jobs_queued(tmp_path, template, appendonly):
    with running(Stack(tmp_path, appendonly=appendonly, **FAULT_ENV), boot(template)) as stack:
        stack.services["worker0"].stop()
        with stack.client() as client:
            job_ids = [submit(client) for _ in range(10)]
            assert stack.redis.client().llen("predict") > 0
            stack.redis.stop()
            stack.redis.start()
            stack.start_worker("worker0")
            wait_until(lambda: client.get("/health").status_code == 200, 10, "gateway")
            if appendonly:
                assert_all_succeed(stack, job_ids)
                return
            for job_id in job_ids:
                response = client.get(f"/jobs/{job_id}")
                assert response.status_code == 404, response.text
                assert "restart without persistence" in response.json()["detail"]
            assert poll_job(client, submit(client))["status"] == "SUCCESS"


def test_worker_started_before_redis_waits_and_then_consumes(tmp_path, template):
    stack = Stack(tmp_path, **FAULT_ENV)
    try:
        shutil.copytree(template, stack.artifacts)
        worker = stack.start_worker("worker0", wait=False)
        time.sleep(4)
        assert worker.alive(), worker.output()[-3000:]
        stack.start_redis()
        stack.wait_for_worker(worker, timeout=60)
        stack.start_gateway()
        with stack.client() as client:
            response = client.post("/predict", params={"wait": 20}, json=SEED_BODY)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "SUCCESS"
    finally:
        stack.stop()


def test_backpressure_is_429_with_retry_after_and_accepted_jobs_complete(tmp_path, template):
    with running(
        Stack(tmp_path, **FAULT_ENV, MLOPS_API__MAX_QUEUE_DEPTH="5"), boot(template, worker=False)
    ) as stack:
        accepted, refused = [], None
        with stack.client() as client:
            for _ in range(50):
                response = client.post("/predict", json=row_body(SETOSA))
                if response.status_code == 429:
                    refused = response
                    break
                assert response.status_code == 202, response.text
                accepted.append(response.json()["job_id"])
            assert refused is not None, "no 429 after 50 requests with max_queue_depth=5"
            assert 5 <= len(accepted) < 50
            assert int(refused.headers["retry-after"]) >= 1
            assert "limit 5" in refused.json()["detail"]
            stack.start_worker("worker0")
            assert_all_succeed(stack, accepted)
            wait_until(
                lambda: client.post("/predict", json=row_body(SETOSA)).status_code == 202,
                10,
                "admission after the queue drained",
            )


def test_gateway_keys_are_never_logged(steady):
    with steady.client() as client, steady.client("wrong-key-not-to-be-logged") as stranger:
        client.post("/predict", params={"wait": 5}, json=SEED_BODY)
        stranger.post("/predict", json=SEED_BODY)
    with steady.admin() as admin:
        admin.get("/models")
    log = steady.services["gateway"].output()
    for key in (PREDICT_KEY, ADMIN_KEY, "wrong-key-not-to-be-logged"):
        assert key not in log


def _records(client, request_id: str) -> list[dict]:
    records = [orjson.loads(client.get(k)) for k in client.scan_iter("mlops:job:*")]
    return [r for r in records if r.get("request_id") == request_id]


def test_a_write_redis_held_back_and_dropped_is_an_unknown_503_and_the_retry_queues_once(steady):
    """CLIENT PAUSE WRITE: reads go on, the submit's script waits past the gateway's 1 s
    timeout, and Redis drops it when the gateway gives up the connection. The 503 names the
    job it may have queued; GET /jobs says it was not; the retry (same Idempotency-Key)
    queues one job, never a 409 for a key whose job was never written."""
    key = {"Idempotency-Key": f"paused-{time.time_ns()}"}
    body = row_body(SETOSA, "paused")
    observer = steady.redis.client()
    with steady.client() as client:
        observer.execute_command("CLIENT", "PAUSE", "1500", "WRITE")
        started = time.monotonic()
        unknown = client.post("/predict", json=body, headers=key)
        elapsed = time.monotonic() - started
        time.sleep(1.0)  # the pause is over
        lookup = client.get(f"/jobs/{unknown.json().get('job_id')}")
        retry = client.post("/predict", json=body, headers=key, params={"wait": 10})
    assert unknown.status_code == 503, unknown.text
    assert elapsed < 1 + 2.5, elapsed
    assert unknown.json()["reason"] == "outcome_unknown"
    assert "may or may not have been queued" in unknown.json()["detail"]
    assert lookup.status_code == 404, lookup.text
    assert retry.status_code == 200, retry.text
    assert retry.json()["status"] == "SUCCESS"
    assert [r["job_id"] for r in _records(observer, "paused")] == [retry.json()["job_id"]]


def test_a_write_applied_whose_answer_was_lost_is_found_by_the_retry(tmp_path, template):
    """Redis runs the submit at once but its reply comes 2 s late (a proxy holds it): the
    gateway answers 503 naming the job; the retry with the same Idempotency-Key returns that
    job, and it is the only one. (Before, the timeout deleted the key: a second job.)"""
    proxy = None
    with running(Stack(tmp_path, **FAULT_ENV), boot(template, gateway=False)) as stack:
        try:
            proxy = ScriptReplyDelay(stack.redis.port, delay=2.0).start()
            stack.start_gateway(MLOPS_REDIS_URL=proxy.url)
            stack.wait_ready()
            key = {"Idempotency-Key": f"lost-{time.time_ns()}"}
            body = row_body(SETOSA, "lost-answer")
            with stack.client() as client:
                # One submit first: Redis then knows the script (EVALSHA), as in a running service.
                assert (
                    client.post("/predict", json=SEED_BODY, params={"wait": 10}).status_code == 200
                )
                proxy.arm()
                unknown = client.post("/predict", json=body, headers=key)
                proxy.armed.clear()
                time.sleep(2.5)  # the held reply has gone by
                retry = client.post("/predict", json=body, headers=key, params={"wait": 10})
            assert unknown.status_code == 503, unknown.text
            assert unknown.json()["reason"] == "outcome_unknown"
            assert retry.status_code == 200, retry.text
            assert retry.json()["job_id"] == unknown.json()["job_id"]
            assert retry.json()["status"] == "SUCCESS"
            assert retry.headers["idempotent-replayed"] == "true"
            records = _records(stack.redis.client(), "lost-answer")
            assert [r["job_id"] for r in records] == [unknown.json()["job_id"]]
        finally:
            if proxy is not None:
                proxy.stop()


THOUSAND_ROWS = {"request_id": "bulk", "instances": [SETOSA] * 1000}


def test_a_stream_of_thousand_row_jobs_hits_429_before_redis_fills_and_loses_nothing(
    tmp_path, template
):
    """No worker consumes: the queue grows by ~25 KB a job. Admission counts bytes, so the
    stream gets 429 at api.max_queue_bytes, long before the message limit and before Redis
    nears its maxmemory; every accepted job completes once a worker starts."""
    maxmemory = 64 * 1024 * 1024
    with running(
        Stack(
            tmp_path,
            redis_args=["--maxmemory", str(maxmemory), "--maxmemory-policy", "noeviction"],
            **FAULT_ENV,
            MLOPS_API__MAX_QUEUE_BYTES=str(4 * 1024 * 1024),
        ),
        boot(template, worker=False),
    ) as stack:
        accepted, refused = [], None
        with stack.client() as client:
            for _ in range(1000):
                response = client.post("/predict", json=THOUSAND_ROWS)
                if response.status_code == 429:
                    refused = response
                    break
                assert response.status_code == 202, response.text
                accepted.append(response.json()["job_id"])
            used = int(stack.redis.client().info("memory")["used_memory"])
            assert refused is not None, f"no 429 after {len(accepted)} jobs of 1,000 rows"
            assert "MiB" in refused.json()["detail"], refused.text
            assert int(refused.headers["retry-after"]) >= 1
            assert used < 0.5 * maxmemory, used
            assert len(accepted) < 5000  # long before api.max_queue_depth
            stack.start_worker("worker0")
            assert_all_succeed(stack, accepted, timeout=120)
            wait_until(
                lambda: client.post("/predict", json=THOUSAND_ROWS).status_code == 202,
                30,
                "admission after the queue drained",
            )

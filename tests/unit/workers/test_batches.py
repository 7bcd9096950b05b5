"""workers/jobs.py run_message against fakeredis: deadlines, no model, redelivery, results."""

from __future__ import annotations

import time

import fakeredis
import orjson
import pytest

from core.messages import RESULTS_CHANNEL, batch_key, job_key, unpack_results
from core.settings import get_settings
from core.store import open_store
from training.pipeline import run_training
from training.serialization import load_model
from workers.jobs import STARTED_MARK_ROWS, run_message
from workers.model_cache import ModelCache

SETOSA = [5.1, 3.5, 1.4, 0.2]
TTL = 60


@pytest.fixture
def client():
    return fakeredis.FakeRedis()


@pytest.fixture
def results(client):
    """Messages published on the results channel, read after each run."""
    pubsub = client.pubsub()
    pubsub.subscribe(RESULTS_CHANNEL)
    assert pubsub.get_message(timeout=1)["type"] == "subscribe"

    def published() -> list[list[dict]]:
        out = []
        while (message := pubsub.get_message(timeout=0.05)) is not None:
            job_ids, raw_results = unpack_results(message["data"])
            decoded = [orjson.loads(raw) for raw in raw_results]
            assert [r["job_id"] for r in decoded] == job_ids
            out.append(decoded)
        return out

    return published


def make_cache(trained: bool) -> ModelCache:
    settings = get_settings()
    store = open_store(settings)
    if trained:
        run_training(settings, store)
    return ModelCache(store, lambda v: load_model(store, v, settings))


def job(job_id: str, rows=None, **extra) -> dict:
    return {"job_id": job_id, "request_id": None, "rows": rows or [SETOSA], **extra}


def run(client, cache, jobs, task_id="task-1", max_attempts=3, redelivered=False) -> dict:
    return run_message(
        client,
        cache,
        jobs,
        task_id=task_id,
        ttl=TTL,
        max_attempts=max_attempts,
        redelivered=redelivered,
    )


def stored(client, job_id: str) -> dict:
    raw = client.get(job_key(job_id))
    assert raw is not None, f"no result stored for {job_id}"
    assert 0 < client.ttl(job_key(job_id)) <= TTL
    return orjson.loads(raw)


def test_results_under_job_keys_and_one_publish_per_batch(client, results):
    cache = make_cache(trained=True)
    jobs = [job(f"j{i}") for i in range(5)]
    summary = run(client, cache, jobs)
    assert summary == {"jobs": 5, "failed": 0, "model_version": 1, "attempt": 1}
    for sent in jobs:
        record = stored(client, sent["job_id"])
        assert record["status"] == "SUCCESS" and record["predictions"] == ["setosa"]
    messages = results()
    assert len(messages) == 1
    assert [r["job_id"] for r in messages[0]] == [j["job_id"] for j in jobs]
    # a small message finishes within a millisecond: no round trip to mark it STARTED
    assert client.get(batch_key("task-1")) is None


def test_a_large_message_is_marked_started(client, results):
    cache = make_cache(trained=True)
    jobs = [job("big", rows=[SETOSA] * STARTED_MARK_ROWS)]
    assert run(client, cache, jobs)["attempt"] == 1
    assert client.get(batch_key("task-1")) == b"STARTED"
    assert len(stored(client, "big")["predictions"]) == STARTED_MARK_ROWS


def test_expired_jobs_fail_with_reason_expired(client, results):
    cache = make_cache(trained=True)
    jobs = [job("late", expires_at=time.time() - 1), job("ok", expires_at=time.time() + 60)]
    summary = run(client, cache, jobs)
    assert summary["failed"] == 1
    late, ok = stored(client, "late"), stored(client, "ok")
    assert late["status"] == "FAILURE" and late["error"]["reason"] == "expired"
    assert ok["status"] == "SUCCESS"
    assert len(results()) == 1  # expired and answered jobs share the one PUBLISH


def test_no_production_model_fails_every_job(client, results):
    cache = make_cache(trained=False)
    summary = run(client, cache, [job("a"), job("b"), job("late", expires_at=time.time() - 1)])
    assert summary["failed"] == 3
    assert stored(client, "a")["error"]["reason"] == "no_production_model"
    assert stored(client, "b")["status"] == "FAILURE"
    assert stored(client, "late")["error"]["reason"] == "expired"
    assert sum(len(m) for m in results()) == 3


def test_redelivery_runs_jobs_one_at_a_time_skipping_answered_ones(client, results):
    cache = make_cache(trained=True)
    jobs = [job("done"), job("crashy"), job("fresh")]
    answered = {"job_id": "done", "status": "SUCCESS", "predictions": ["kept"]}
    client.set(job_key("done"), orjson.dumps(answered), ex=TTL)
    client.set("mlops:attempts:task-1", 1)  # a worker died on this message once already
    summary = run(client, cache, jobs, redelivered=True)
    assert summary["attempt"] == 2
    assert stored(client, "done")["predictions"] == ["kept"]  # not recomputed
    assert stored(client, "crashy")["status"] == "SUCCESS"
    assert stored(client, "fresh")["status"] == "SUCCESS"
    messages = results()
    assert [[r["job_id"] for r in m] for m in messages] == [["crashy"], ["fresh"]]


def test_job_over_max_attempts_ends_in_failure(client, results):
    cache = make_cache(trained=True)
    client.set("mlops:attempts:task-1", 3)
    client.set("mlops:attempts:killer", 3)  # running at each of the three crashes
    summary = run(client, cache, [job("killer"), job("other")], max_attempts=3, redelivered=True)
    assert summary["failed"] == 1
    killer = stored(client, "killer")
    assert killer["status"] == "FAILURE" and killer["error"]["reason"] == "worker_lost"
    assert killer["model_version"] == 1
    assert stored(client, "other")["status"] == "SUCCESS"
    assert len(results()) == 2


def test_each_redelivery_counts_an_attempt(client):
    cache = make_cache(trained=True)
    assert run(client, cache, [job("a")], task_id="t")["attempt"] == 1
    assert run(client, cache, [job("a")], task_id="t", redelivered=True)["attempt"] == 2
    assert int(client.get("mlops:attempts:t")) == 1  # redeliveries are counted in Redis
    assert run(client, cache, [job("a")], task_id="t", redelivered=True)["attempt"] == 2
    assert int(client.get("mlops:attempts:t")) == 2
    assert 0 < client.ttl("mlops:attempts:t") <= TTL

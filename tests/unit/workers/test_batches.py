"""workers/batches.py run_message against fakeredis: deadlines, no model, redelivery, results,
metrics."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import orjson
import pytest

from core.errors import NoProductionModel
from core.jobs import batch_key, job_key
from core.messages import RESULTS_CHANNEL, unpack_results
from core.settings import get_settings
from core.store import open_store
from tests.factories import (
    SETOSA,
    Constant,
    finished,
    loaded_model,
    memory_tracer,
    predict_job,
    samples,
    serving_cache,
    total,
)
from training.pipeline import run_training
from workers.batches import STARTED_MARK_ROWS, run_message
from workers.metrics import WorkerMetrics
from workers.model_cache import LoadedModel

FEATURES = ["a", "b"]  # the stand-in model's (tests/factories.py stand_in_metadata)

TTL = 60


@pytest.fixture
def results(redis_client):
    """Messages published on the results channel, read after each run."""
    pubsub = redis_client.pubsub()
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


def make_cache(trained: bool):
    """The worker's cache on this test's store, with v1 in production when ``trained``."""
    store = open_store(get_settings())
    if trained:
        run_training(get_settings(), store)
    return serving_cache(store)


def run(redis_client, cache, jobs, task_id="task-1", max_attempts=3, redelivered=False) -> dict:
    return run_message(
        redis_client,
        cache,
        jobs,
        task_id=task_id,
        ttl=TTL,
        max_attempts=max_attempts,
        redelivered=redelivered,
    )


def stored(redis_client, job_id: str) -> dict:
    raw = redis_client.get(job_key(job_id))
    assert raw is not None, f"no result stored for {job_id}"
    assert 0 < redis_client.ttl(job_key(job_id)) <= TTL
    return orjson.loads(raw)


def test_results_under_job_keys_and_one_publish_per_batch(redis_client, results):
    cache = make_cache(trained=True)
    jobs = [predict_job(f"j{i}") for i in range(5)]
    summary = run(redis_client, cache, jobs)
    assert summary == {"jobs": 5, "failed": 0, "model_version": 1, "attempt": 1}
    for sent in jobs:
        record = stored(redis_client, sent["job_id"])
        assert record["status"] == "SUCCESS" and record["predictions"] == ["setosa"]
    messages = results()
    assert len(messages) == 1
    assert [r["job_id"] for r in messages[0]] == [j["job_id"] for j in jobs]
    # a small message finishes within a millisecond: no round trip to mark it STARTED
    assert redis_client.get(batch_key("task-1")) is None


def test_a_large_message_is_marked_started(redis_client, results):
    cache = make_cache(trained=True)
    jobs = [predict_job("big", rows=[SETOSA] * STARTED_MARK_ROWS)]
    assert run(redis_client, cache, jobs)["attempt"] == 1
    assert redis_client.get(batch_key("task-1")) == b"STARTED"
    assert len(stored(redis_client, "big")["predictions"]) == STARTED_MARK_ROWS


def test_expired_jobs_fail_with_reason_expired(redis_client, results):
    cache = make_cache(trained=True)
    jobs = [
        predict_job("late", expires_at=time.time() - 1),
        predict_job("ok", expires_at=time.time() + 60),
    ]
    summary = run(redis_client, cache, jobs)
    assert summary["failed"] == 1
    late, ok = stored(redis_client, "late"), stored(redis_client, "ok")
    assert late["status"] == "FAILURE" and late["error"]["reason"] == "expired"
    assert ok["status"] == "SUCCESS"
    assert len(results()) == 1  # expired and answered jobs share the one PUBLISH


def test_no_production_model_fails_every_job(redis_client, results):
    cache = make_cache(trained=False)
    summary = run(
        redis_client,
        cache,
        [predict_job("a"), predict_job("b"), predict_job("late", expires_at=time.time() - 1)],
    )
    assert summary["failed"] == 3
    assert stored(redis_client, "a")["error"]["reason"] == "no_production_model"
    assert stored(redis_client, "b")["status"] == "FAILURE"
    assert stored(redis_client, "late")["error"]["reason"] == "expired"
    assert sum(len(m) for m in results()) == 3


def test_redelivery_runs_jobs_one_at_a_time_skipping_answered_ones(redis_client, results):
    cache = make_cache(trained=True)
    jobs = [predict_job("done"), predict_job("crashy"), predict_job("fresh")]
    answered = {"job_id": "done", "status": "SUCCESS", "predictions": ["kept"]}
    redis_client.set(job_key("done"), orjson.dumps(answered), ex=TTL)
    redis_client.set("mlops:attempts:task-1", 1)  # a worker died on this message once already
    summary = run(redis_client, cache, jobs, redelivered=True)
    assert summary["attempt"] == 2
    assert stored(redis_client, "done")["predictions"] == ["kept"]  # not recomputed
    assert stored(redis_client, "crashy")["status"] == "SUCCESS"
    assert stored(redis_client, "fresh")["status"] == "SUCCESS"
    messages = results()
    assert [[r["job_id"] for r in m] for m in messages] == [["crashy"], ["fresh"]]


def test_job_over_max_attempts_ends_in_failure(redis_client, results):
    cache = make_cache(trained=True)
    redis_client.set("mlops:attempts:task-1", 3)
    redis_client.set("mlops:attempts:killer", 3)  # running at each of the three crashes
    summary = run(
        redis_client,
        cache,
        [predict_job("killer"), predict_job("other")],
        max_attempts=3,
        redelivered=True,
    )
    assert summary["failed"] == 1
    killer = stored(redis_client, "killer")
    assert killer["status"] == "FAILURE" and killer["error"]["reason"] == "worker_lost"
    assert killer["model_version"] == 1
    assert stored(redis_client, "other")["status"] == "SUCCESS"
    assert len(results()) == 2


def test_each_redelivery_counts_an_attempt(redis_client):
    cache = make_cache(trained=True)
    assert run(redis_client, cache, [predict_job("a")], task_id="t")["attempt"] == 1
    assert (
        run(redis_client, cache, [predict_job("a")], task_id="t", redelivered=True)["attempt"] == 2
    )
    assert int(redis_client.get("mlops:attempts:t")) == 1  # redeliveries are counted in Redis
    assert (
        run(redis_client, cache, [predict_job("a")], task_id="t", redelivered=True)["attempt"] == 2
    )
    assert int(redis_client.get("mlops:attempts:t")) == 2
    assert 0 < redis_client.ttl("mlops:attempts:t") <= TTL


# -- the batch's metrics (workers/metrics.py) ---------------------------------------------------
class FixedCache:
    def __init__(self, served: LoadedModel | None):
        self.served = served
        self.store = SimpleNamespace(model_name="iris")

    def current(self) -> LoadedModel:
        if self.served is None:
            raise NoProductionModel("no production version yet")
        return self.served


def test_run_message_records_one_batch_with_its_failures(redis_client):
    metrics = WorkerMetrics()
    jobs = [
        predict_job("ok1", [[1, 2]], FEATURES),
        predict_job("ok2", [[3, 4]], FEATURES),
        predict_job("bad", [[1]], FEATURES),
    ]
    summary = run_message(
        redis_client,
        FixedCache(loaded_model(1, Constant())),
        jobs,
        task_id="t1",
        ttl=60,
        max_attempts=3,
        metrics=metrics,
    )
    assert summary["failed"] == 1
    found = samples(metrics.registry)
    assert total(found, "mlops_batches_total") == 1
    assert total(found, "mlops_batch_size_sum") == 3
    assert total(found, "mlops_predictions_total", model="iris", status="success") == 2
    assert total(found, "mlops_predictions_total", model="iris", status="failure") == 1
    assert total(found, "mlops_inference_duration_seconds_count") == 1


def test_run_message_without_a_model_counts_every_job_as_failed(redis_client):
    metrics = WorkerMetrics()
    run_message(
        redis_client,
        FixedCache(None),
        [predict_job("a", [[1, 2]], FEATURES), predict_job("b", [[1, 2]], FEATURES)],
        task_id="t2",
        ttl=60,
        max_attempts=3,
        metrics=metrics,
    )
    found = samples(metrics.registry)
    assert total(found, "mlops_predictions_total", model="iris", status="failure") == 2
    assert total(found, "mlops_inference_duration_seconds_count") == 0
    # Metrics are a side channel: each job still got its failure result.
    assert json.loads(redis_client.get(job_key("b")))["error"]["reason"] == "no_production_model"


def test_traced_the_prediction_and_its_publish_are_spans_linked_to_each_request(
    redis_client, results
):
    tracer, exporter = memory_tracer()
    cache = make_cache(trained=True)
    requests = [f"00-{i + 1:032x}-{i + 1:016x}-01" for i in range(3)]
    jobs = [predict_job(f"j{i}", traceparent=tp) for i, tp in enumerate(requests)]
    message = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with tracer.span("process predict", kind="consumer", parent=message):
        run_message(redis_client, cache, jobs, task_id="t", ttl=TTL, max_attempts=3, tracer=tracer)
    spans = finished(tracer, exporter)
    predict, publish, process = (
        spans["predict"],
        spans["publish mlops:results"],
        spans["process predict"],
    )
    assert process.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert predict.parent.span_id == publish.parent.span_id == process.context.span_id
    assert [link.context.trace_id for link in predict.links] == [1, 2, 3]
    assert predict.attributes["mlops.jobs"] == 3 and predict.attributes["mlops.failed"] == 0
    assert predict.attributes["mlops.model_version"] == 1
    assert len(results()) == 1

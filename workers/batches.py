"""Run one predict message: attempts, deadlines, the model, results. No Celery in here.

Crash safety: every delivery of a message increments an attempt counter in Redis. The first
attempt predicts all jobs together. A redelivery means a worker died on this message, so the
jobs run one at a time, each with its own counter, skipping those already answered; a job
that was running at every crash ends in FAILURE after ``max_retries_on_crash`` attempts
instead of killing workers forever.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

import redis

from core.errors import MLOpsError
from core.jobs import (
    STARTED,
    SUCCESS,
    attempts_key,
    batch_key,
    decode_record,
    is_finished,
    job_key,
    predict_failure,
)
from core.messages import RESULTS_CHANNEL
from core.tracing import TRACEPARENT
from workers.inference import expired, predict_jobs
from workers.model_cache import ModelCache
from workers.prediction_log import LogBatch, log_batch
from workers.results import store_and_publish

if TYPE_CHECKING:
    from core.otel import Tracer
    from core.settings import Settings
    from workers.metrics import WorkerMetrics


STARTED_MARK_ROWS = 256


def publish(client: redis.Redis, results: list[dict], ttl: int, log: LogBatch | None = None):
    """Store each job's result under its job key and wake the gateways, in one command; with
    ``log``, its entry goes to the prediction log first (workers/results.py)."""
    if results:
        store_and_publish(client, results, ttl, log.entry() if log is not None else None)


# KEYS: the attempt counter, then (optional) the message's key to mark STARTED. ARGV: the
# seconds both are kept, STARTED. Counting an attempt is part of answering jobs already
# accepted, so, like their answers (workers/results.py), it is written even past maxmemory.
COUNT_ATTEMPT = """#!lua flags=allow-oom
if KEYS[2] then redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[1]) end
local tries = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[1])
return tries
"""


def count_attempt(client: redis.Redis, key: str, ttl: int, started: str | None = None) -> int:
    """Count one more attempt under ``key``; return the count. With ``started``, mark that
    message's key STARTED in the same command."""
    keys = [key] if started is None else [key, started]
    return int(client.register_script(COUNT_ATTEMPT)(keys, [ttl, STARTED]))


def _start(client: redis.Redis, task_id: str, ttl: int) -> int:
    return count_attempt(client, attempts_key(task_id), ttl, batch_key(task_id))


def run_message(
    client: redis.Redis,
    cache: ModelCache,
    jobs: list[dict],
    *,
    task_id: str,
    ttl: int,
    max_attempts: int,
    redelivered: bool = False,
    metrics: WorkerMetrics | None = None,
    version: int | None = None,
    tracer: Tracer | None = None,
    settings: Settings | None = None,
) -> dict:
    """Answer every job of one message; return a summary for Celery/Flower.

    A message holds the jobs of one model (``cache``'s), for its production version or, with
    ``version``, for that pinned version. With a ``tracer``, the prediction and the
    publishing of its results are spans (of the current span: the message's). With
    ``settings``, the answered jobs go to the prediction log (``prediction_log``)."""
    # A round trip to mark the jobs STARTED and count the attempt costs ~0.12 ms, a quarter of
    # predicting a small message (0.4-0.5 ms for 1 to 16 one-row jobs; measured on the 2-core
    # machine): it is made for redeliveries (crash recovery needs the count) and for messages
    # large enough that STARTED can be seen; a small one finishes within a millisecond.
    if redelivered or sum(len(job.get("rows") or ()) for job in jobs) >= STARTED_MARK_ROWS:
        attempt = _start(client, task_id, ttl)
    else:
        attempt = 1
    if redelivered:
        attempt = max(attempt, 2)
    now = time.time()
    live = [job for job in jobs if not expired(job, now)]
    stale = [
        predict_failure(job, "expired", "the job's deadline passed before a worker could start it")
        for job in jobs
        if expired(job, now)
    ]
    try:
        model = cache.current() if version is None else cache.version(version)
    except MLOpsError as exc:  # no production version; the pinned one is missing or refused
        missing = [predict_failure(job, exc.reason, str(exc)) for job in live]
        publish(client, stale + missing, ttl)
        if metrics is not None:
            metrics.batch_done(cache.store.model_name, len(jobs), len(jobs))
        return {"jobs": len(jobs), "failed": len(jobs), "reason": exc.reason}
    inference = None  # timed on the normal path only: a redelivery also waits on Redis
    rows = 0
    if attempt == 1:
        rows = sum(len(job.get("rows") or ()) for job in live)
        with _span(tracer, "predict", live, model) as span:
            started = time.perf_counter()
            results = predict_jobs(model, live)
            inference = time.perf_counter() - started
            if span is not None:
                span.set_attribute("mlops.failed", sum(r["status"] != SUCCESS for r in results))
        log = log_batch(settings, model, live, results) if settings is not None else None
        with _span(tracer, f"publish {RESULTS_CHANNEL}", (), model, kind="producer"):
            publish(client, stale + results, ttl, log)  # one PUBLISH for the whole message
    else:
        publish(client, stale, ttl)
        results = _run_isolated(
            client, model, live, ttl=ttl, max_attempts=max_attempts, settings=settings
        )
    failed = sum(r["status"] != SUCCESS for r in results) + len(stale)
    if metrics is not None:
        metrics.batch_done(model.name, len(jobs), failed, inference if live else None, rows)
    return {
        "jobs": len(jobs),
        "failed": failed,
        "model_version": model.version,
        "attempt": attempt,
    }


def _span(tracer: Tracer | None, name: str, jobs, model, kind: str = "internal"):
    """A span of the message's work, linked to its ``jobs``' requests; nothing without a
    tracer (the context manager then yields None)."""
    if tracer is None:
        return contextlib.nullcontext()
    rows = sum(len(job.get("rows") or ()) for job in jobs)
    return tracer.span(
        name,
        kind=kind,
        links=(job.get(TRACEPARENT) for job in jobs),
        attributes={
            "mlops.model": model.name,
            "mlops.model_version": model.version,
            "mlops.jobs": len(jobs),
            "mlops.rows": rows,
        },
    )


def _run_isolated(
    client, model, jobs: list[dict], *, ttl: int, max_attempts: int, settings=None
) -> list[dict]:
    records = client.mget([job_key(job["job_id"]) for job in jobs]) if jobs else []
    results = []
    for job, record in zip(jobs, records, strict=True):
        if is_finished(decode_record(record)):
            continue  # answered before the crash
        tries = count_attempt(client, attempts_key(job["job_id"]), ttl)
        if tries > max_attempts:
            result = predict_failure(
                job,
                "worker_lost",
                f"the worker died {tries} times while running this job; giving up",
                model.name,
                model.version,
            )
        else:
            result = predict_jobs(model, [job])[0]
        log = log_batch(settings, model, [job], [result]) if settings is not None else None
        publish(client, [result], ttl, log)  # one at a time: a crash on the next keeps this one
        results.append(result)
    return results


def fail_unanswered(client: redis.Redis, jobs: list[dict], reason: str, message: str, ttl: int):
    """FAILURE for every job of a message that has no final answer yet; return how many.

    Called when the task itself failed (hard time limit, an unexpected error): Celery then
    acknowledges the message, so without this its jobs would stay PENDING until they expire.
    """
    jobs = [job for job in jobs if isinstance(job, dict) and isinstance(job.get("job_id"), str)]
    records = client.mget([job_key(job["job_id"]) for job in jobs]) if jobs else []
    open_jobs = [
        job
        for job, record in zip(jobs, records, strict=True)
        if not is_finished(decode_record(record))
    ]
    publish(client, [predict_failure(job, reason, message) for job in open_jobs], ttl)
    return len(open_jobs)

"""Run one retrain job under the single-flight lock (core/single_flight.py). No Celery in here.

Whoever queued it (POST /retrain, beat, or a raw message), the job runs only while it holds the
lock's lease; a job that finds another run holding it is ``skipped``. A copy of the same job
delivered again while its first run is still alive elsewhere (kombu redelivers a message whose
node stopped refreshing it) waits one lease: if the first run keeps its lease it is alive and
the copy is dropped (:class:`AlreadyRunning`); if the lease lapses the first run died and the
copy takes over. Each start counts an attempt: a job that kills its worker every time ends in
FAILURE (``worker_lost``) after ``worker.max_retries_on_crash`` retries, like a predict job.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import orjson
import redis
from loguru import logger

from core.jobs import (
    PENDING,
    attempts_key,
    decode_record,
    is_finished,
    job_key,
    train_failure,
    train_record,
)
from core.single_flight import MANUAL, RunLease
from workers.batches import count_attempt
from workers.runtime import Runtime

if TYPE_CHECKING:  # training.pipeline imports scikit-learn: only when a retrain runs
    from training.pipeline import Progress

POLL_SECONDS = 0.5


class AlreadyRunning(Exception):
    """This delivery is a copy of a run that is alive in another process: drop it."""

    outcome = "skipped"  # as workers/metrics.py counts it


def run_retrain(
    rt: Runtime,
    job_id: str,
    progress: Progress | None = None,
    *,
    requested_by: str = "unknown",
    model: str | None = None,
    trigger: str = MANUAL,
    trigger_detail: dict | None = None,
    force: bool = False,
) -> dict:
    """Train, gate and maybe promote ``model`` (None: the default model); ``skipped`` when
    another training of that model holds its lock, or (unless ``force``) when there is
    nothing new to learn. ``trigger`` (core/single_flight.py TRIGGERS) and its detail go in
    the version."""
    settings = rt.settings
    ttl = settings.api.jobs_ttl_seconds
    store = rt.cache_for(model).store
    # A raw message (not queued through core/single_flight) has no record yet: make one.
    record = train_record(
        job_id,
        PENDING,
        model=store.model_name,
        requested_by=requested_by,
        submitted_at=time.time(),
    )
    rt.redis.set(job_key(job_id), orjson.dumps(record), ex=ttl, nx=True)
    lease = RunLease(rt.redis, store.model_name, job_id, settings.training.lock_lease_seconds)
    holder = _start(rt.redis, lease)
    if holder is not None:
        logger.info("retrain {} skipped: training job {} holds the lock", job_id, holder)
        return {
            "decision": "skipped",
            "reason": f"training job {holder} is already running",
            "running_job_id": holder,
        }
    attempt = count_attempt(rt.redis, attempts_key(job_id), ttl)
    if attempt > settings.worker.max_retries_on_crash + 1:
        return _give_up(rt, lease, job_id, attempt, ttl)
    from training.pipeline import run_training

    with lease.renewing():
        outcome = run_training(
            settings,
            store,
            progress=progress,
            lease=lease,
            actor=f"job {job_id} ({_requester(rt.redis, job_id)})",
            trigger=trigger,
            trigger_detail=trigger_detail,
            force=force,
        )
    result = outcome.to_dict()
    logger.info("retrain {} finished: {}", job_id, result.get("decision"))
    if result.get("promoted"):
        rt.cache_for(model).refresh()
    return result


def _start(client: redis.Redis, lease: RunLease) -> str | None:
    """Take the lease: None, or the id of the other job that holds it.

    Raises AlreadyRunning when this very job runs elsewhere and its run renews its lease.
    """
    deadline = None
    while True:
        holder = lease.start()
        if holder is None:
            return None
        if holder.job_id != lease.job_id:
            return holder.job_id
        if deadline is None:
            deadline = time.monotonic() + lease.lease_seconds + 2 * POLL_SECONDS
            logger.warning("retrain {} is running elsewhere: waiting one lease", lease.job_id)
        if _finished(client, lease.job_id) or time.monotonic() > deadline:
            raise AlreadyRunning(f"retrain {lease.job_id} is already running in another process")
        time.sleep(POLL_SECONDS)


def _finished(client: redis.Redis, job_id: str) -> bool:
    return is_finished(decode_record(client.get(job_key(job_id))))


def _requester(client: redis.Redis, job_id: str) -> str:
    record = decode_record(client.get(job_key(job_id)))
    return str(record.get("requested_by")) if record else "unknown"


def _give_up(rt: Runtime, lease: RunLease, job_id: str, attempt: int, ttl: int) -> dict:
    message = f"the worker died {attempt - 1} times while running this retrain; giving up"
    logger.error("retrain {}: {}", job_id, message)
    record = decode_record(rt.redis.get(job_key(job_id)))
    failed = train_failure(job_id, "worker_lost", message, record)
    rt.redis.set(job_key(job_id), orjson.dumps(failed), ex=ttl)
    lease.release()
    return {"decision": "failed", "reason": message}

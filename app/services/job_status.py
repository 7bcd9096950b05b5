"""Read a job's status: the gateway's own record, the batch marker, Celery's result."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import redis.asyncio as aioredis

from app.auth import Principal
from app.errors import JobNotFound
from core.jobs import (
    FAILURE,
    PENDING,
    STARTED,
    SUCCESS,
    TRAIN,
    batch_key,
    is_finished,
    job_error,
    job_key,
)
from core.messages import PREDICT_QUEUE, TRAIN_QUEUE

CELERY_META = "celery-task-meta-{}"


def not_found(job_id: str, ttl: int) -> JobNotFound:
    return JobNotFound(
        f"unknown job id {job_id!r}: it was never accepted, its record expired "
        f"(records are kept {ttl} s), or Redis lost it in a restart without persistence"
    )


def _celery_state(job_id: str, record: dict, meta: dict) -> dict:
    """The record of a retrain still running, brought up to date from Celery's task state."""
    status = meta.get("status", PENDING)  # Celery's names: ours, PROGRESS (update_state), REVOKED
    answer = {**record, "status": status}
    result = meta.get("result")
    if status == SUCCESS:
        answer["result"] = result
    elif status == "PROGRESS" and isinstance(result, dict):
        answer["status"] = STARTED
        answer["progress"] = result
    elif status == FAILURE:
        if isinstance(result, dict):
            message = f"{result.get('exc_type', 'Error')}: {result.get('exc_message')}"
        else:
            message = str(result)
        answer["error"] = job_error("task_failed", message)
    elif status == "REVOKED":
        answer["status"] = FAILURE
        answer["error"] = job_error("revoked", "the task was revoked or expired")
    return answer


async def job_status(
    client: aioredis.Redis,
    job_id: str,
    ttl: int,
    *,
    viewer: Principal | None = None,
    consumers: Callable[[str], int | None] | None = None,
) -> dict:
    """The job's public record. ``viewer``: the caller, who gets 404 for a job of another
    API key (``admin`` keys read every job). ``consumers``: live workers of a queue, to say
    when a waiting job's queue has none."""
    raw = await client.get(job_key(job_id))
    if raw is None:
        raise not_found(job_id, ttl)
    record = orjson.loads(raw)
    if viewer is not None and not viewer.may_read(record.get("owner")):
        raise not_found(job_id, ttl)  # the same answer as for an unknown id: no oracle
    if is_finished(record):
        return record
    if record.get("kind") == TRAIN:
        meta = await client.get(CELERY_META.format(job_id))
        if meta:
            record = _celery_state(job_id, record, orjson.loads(meta))
    else:
        task_id = record.get("task_id")
        if task_id and await client.exists(batch_key(task_id)):
            record["status"] = STARTED
    if record["status"] == PENDING and consumers is not None:
        _say_if_unserved(record, consumers)
    return record


def _say_if_unserved(record: dict, consumers: Callable[[str], int | None]) -> None:
    queue = TRAIN_QUEUE if record.get("kind") == TRAIN else record.get("queue", PREDICT_QUEUE)
    if consumers(queue) == 0:
        record["waiting"] = {
            "queue": queue,
            "consumers": 0,
            "message": f"no live worker consumes the {queue!r} queue: this job waits until "
            "one starts (`celery -A workers worker` consumes every queue)",
        }

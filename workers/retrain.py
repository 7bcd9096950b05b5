"""Retrain with single flight: one training at a time, whoever asks (beat, API, CLI)."""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson
from loguru import logger

from core.lock import LeaseLock
from core.messages import RETRAIN_LOCK_KEY, job_key
from workers.runtime import Runtime

Progress = Callable[[str, int], None]


def run_retrain(rt: Runtime, job_id: str, progress: Progress | None = None) -> dict:
    """Train, gate and maybe promote; ``skipped`` when another training holds the lock."""
    settings = rt.settings
    # Beat and the CLI do not go through the gateway: make the job visible to GET /jobs.
    record = {"job_id": job_id, "kind": "train", "status": "PENDING", "submitted_at": time.time()}
    rt.redis.set(job_key(job_id), orjson.dumps(record), ex=settings.api.jobs_ttl_seconds, nx=True)
    lock = LeaseLock(rt.redis, RETRAIN_LOCK_KEY, job_id, settings.training.lock_lease_seconds)
    if not lock.acquire():
        holder = lock.holder()
        logger.info("retrain {} skipped: training job {} is already running", job_id, holder)
        return {
            "decision": "skipped",
            "reason": f"training job {holder} is already running",
            "running_job_id": holder,
        }
    from training.pipeline import run_training

    with lock.renewing():
        outcome = run_training(settings, rt.store, progress=progress)
    result = outcome.to_dict()
    logger.info("retrain {} finished: {}", job_id, result.get("decision"))
    if result.get("promoted"):
        rt.cache.refresh()
    return result

"""POST /retrain: queue a training run, or join the one already running (single flight)."""

from __future__ import annotations

import time

import orjson
from fastapi import APIRouter

from app.api.deps import AdminScope, GatewayDep
from app.responses import JSONResponse
from app.schemas import ERROR_RESPONSES, JobAccepted
from core.messages import (
    RETRAIN_LOCK_KEY,
    RETRAIN_TASK,
    TRAIN_QUEUE,
    celery_message,
    job_key,
    new_id,
)

router = APIRouter(tags=["models"])


@router.post("/retrain", status_code=202, response_model=JobAccepted, responses={**ERROR_RESPONSES})
async def retrain(gateway: GatewayDep, principal: AdminScope) -> JSONResponse:
    """Retrain, gate and maybe promote; a second call while one runs returns the same job id."""
    settings = gateway.settings
    lease_ms = int(settings.training.lock_lease_seconds * 1000)
    for _ in range(3):
        job_id = new_id()
        if await gateway.redis.set(RETRAIN_LOCK_KEY, job_id, nx=True, px=lease_ms):
            break
        holder = await gateway.redis.get(RETRAIN_LOCK_KEY)
        if holder is not None:
            running = holder.decode()
            return JSONResponse(
                {
                    "job_id": running,
                    "status": "PENDING",
                    "kind": "train",
                    "location": f"/jobs/{running}",
                    "deduplicated": True,
                },
                status_code=202,
                headers={"Location": f"/jobs/{running}"},
            )
    _, payload = celery_message(RETRAIN_TASK, [], queue=TRAIN_QUEUE, task_id=job_id)
    record = {
        "job_id": job_id,
        "kind": "train",
        "status": "PENDING",
        "requested_by": principal.fingerprint,
        "submitted_at": time.time(),
    }
    try:
        async with gateway.redis.pipeline(transaction=True) as pipe:
            pipe.set(job_key(job_id), orjson.dumps(record), ex=settings.api.jobs_ttl_seconds)
            pipe.lpush(TRAIN_QUEUE, payload)
            await pipe.execute()
    except BaseException:
        await gateway.redis.delete(RETRAIN_LOCK_KEY)
        raise
    gateway.metrics.train_jobs.inc()
    location = f"/jobs/{job_id}"
    return JSONResponse(
        {"job_id": job_id, "status": "PENDING", "kind": "train", "location": location},
        status_code=202,
        headers={"Location": location},
    )

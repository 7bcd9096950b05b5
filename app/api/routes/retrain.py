"""POST /retrain: queue a training run, or join the one queued or running (single flight)."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import AdminScope, GatewayDep
from app.responses import JSONResponse, accepted
from app.schemas import ERROR_RESPONSES
from core.jobs import TRAIN, JobAccepted, accepted_body
from core.single_flight import request_retrain_async

router = APIRouter(tags=["models"])


@router.post("/retrain", status_code=202, response_model=JobAccepted, responses={**ERROR_RESPONSES})
async def retrain(gateway: GatewayDep, principal: AdminScope) -> JSONResponse:
    """Retrain, gate and maybe promote; while one is queued or runs, the same job id."""
    job_id, joined = await request_retrain_async(
        gateway.redis,
        requested_by=f"api key {principal.fingerprint}",
        ttl=gateway.settings.api.jobs_ttl_seconds,
        owner=principal.owner,
    )
    if not joined:
        gateway.metrics.train_jobs.inc()
    return accepted(accepted_body(job_id, kind=TRAIN, deduplicated=joined))

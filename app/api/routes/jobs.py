"""GET /jobs/{job_id}: the status or result of a predict or retrain job."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import GatewayDep, PredictScope
from app.responses import JSONResponse
from app.schemas import ERROR_RESPONSES, ErrorPublic
from app.services.job_status import job_status, not_found
from core.jobs import JobPublic

router = APIRouter(tags=["jobs"])


@router.get(
    "/jobs/{job_id}",
    response_model=JobPublic,
    responses={404: {"model": ErrorPublic, "description": "Unknown or expired"}, **ERROR_RESPONSES},
)
async def get_job(job_id: str, gateway: GatewayDep, principal: PredictScope) -> JSONResponse:
    """A job's status: PENDING, STARTED, SUCCESS (with its result) or FAILURE (with the error).

    Only the API key that created a job (or an ``admin`` key) sees it; others get 404."""
    ttl = gateway.settings.api.jobs_ttl_seconds
    if len(job_id) > 64:
        raise not_found(job_id[:64] + "...", ttl)
    record = await job_status(
        gateway.redis, job_id, ttl, viewer=principal, consumers=gateway.workers.consumers
    )
    return JSONResponse(record)

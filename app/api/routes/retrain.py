"""Retraining: queue a training run of a model, or join the one queued or running (single
flight, one per model). ``POST /retrain`` is the default model's."""

from __future__ import annotations

import functools
from typing import Annotated

from fastapi import APIRouter, Path, Query

from app.api.deps import AdminScope, GatewayDep
from app.errors import Conflict
from app.responses import JSONResponse, accepted
from app.schemas import ERROR_RESPONSES, ErrorPublic
from app.state import Gateway
from core.jobs import TRAIN, JobAccepted, accepted_body
from core.messages import TRAIN_QUEUE
from core.settings import MODEL_NAME
from core.single_flight import request_retrain_async

router = APIRouter(tags=["models"])

RESPONSES = {
    404: {"model": ErrorPublic, "description": "No such model"},
    409: {"model": ErrorPublic, "description": "The model has no trainer in the settings"},
    **ERROR_RESPONSES,
}


Force = Annotated[
    bool,
    Query(description="Train even with nothing new to learn (the same data and settings)"),
]


async def _retrain(gateway: Gateway, principal, name: str, force: bool) -> JSONResponse:
    catalog = gateway.catalogs.get(name)  # 404 for a model not served
    if catalog.name not in gateway.settings.models:
        raise Conflict(
            f"model {catalog.name!r} was registered, not trained here: it has no "
            f"[models.{catalog.name}] table naming its trainer; register new versions with "
            "`python -m training register`"
        )
    request = functools.partial(
        request_retrain_async,
        gateway.redis,
        catalog.name,
        requested_by=f"api key {principal.fingerprint}",
        ttl=gateway.settings.api.jobs_ttl_seconds,
        owner=principal.owner,
        trigger="manual",
        force=force,
    )
    tracer = gateway.tracer
    if tracer is None:
        job_id, joined = await request()
    else:
        attributes = {"messaging.destination.name": TRAIN_QUEUE, "mlops.model": catalog.name}
        with tracer.span(f"publish {TRAIN_QUEUE}", kind="producer", attributes=attributes) as span:
            job_id, joined = await request(traceparent=tracer.traceparent())
            span.set_attributes({"mlops.job_id": job_id, "mlops.joined": joined})
    if not joined:
        gateway.metrics.submitted(TRAIN, catalog.name).inc()
    return accepted(accepted_body(job_id, kind=TRAIN, deduplicated=joined))


@router.post("/retrain", status_code=202, response_model=JobAccepted, responses=RESPONSES)
async def retrain(gateway: GatewayDep, principal: AdminScope, force: Force = False) -> JSONResponse:
    """Retrain the default model on its data and the feedback so far, gate and maybe promote
    (skipped with nothing new to learn, unless `force`); while one is queued or runs, the
    same job id."""
    return await _retrain(gateway, principal, gateway.catalogs.default_name, force)


@router.post(
    "/models/{name}/retrain", status_code=202, response_model=JobAccepted, responses=RESPONSES
)
async def retrain_model(
    gateway: GatewayDep,
    principal: AdminScope,
    name: Annotated[str, Path(pattern=MODEL_NAME, description="A served model's name")],
    force: Force = False,
) -> JSONResponse:
    """Retrain the model `name` (as POST /retrain); while one of that model is queued or
    runs, the same job id (two models may train at once)."""
    return await _retrain(gateway, principal, name, force)

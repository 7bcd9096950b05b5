"""POST /predict: validate, group into a message, answer 202 (async) or wait for the result."""

from __future__ import annotations

import hashlib
import re
from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Query, Request

from app.api.deps import GatewayDep, PredictScope
from app.errors import BadRequest, IdempotencyConflict, TooManyRequests, UnsupportedMediaType
from app.responses import JSONResponse
from app.schemas import (
    ERROR_RESPONSES,
    ErrorPublic,
    JobAccepted,
    JobPublic,
    PredictBatch,
    PredictSingle,
)
from app.services.inference import await_result, submit_and_wait
from app.services.jobs import FINISHED, job_status
from app.services.rows import parse_predict_body
from core.messages import idempotency_key, new_id

router = APIRouter(tags=["predict"])

_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d+(?:\.\d+)?)")
BODY_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "anyOf": [
                        PredictSingle.model_json_schema(),
                        PredictBatch.model_json_schema(),
                    ]
                }
            }
        },
    }
}


def accepted(job_id: str, request_id: str | None, *, deduplicated: bool = False) -> JSONResponse:
    location = f"/jobs/{job_id}"
    body = {"job_id": job_id, "status": "PENDING", "request_id": request_id, "location": location}
    if deduplicated:
        body["deduplicated"] = True
    return JSONResponse(body, status_code=202, headers={"Location": location})


def wait_seconds(query: float | None, prefer: str | None, ceiling: float) -> float:
    """``?wait=`` wins over ``Prefer: wait=`` (RFC 7240); both are capped at the ceiling."""
    if query is None and prefer:
        match = _PREFER_WAIT.search(prefer)
        query = float(match.group(1)) if match else None
    return min(query or 0.0, ceiling)


def _check_json(request: Request) -> None:
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaType(
            f"send the body as JSON with Content-Type: application/json (got {content_type!r})"
        )


@router.post(
    "/predict",
    status_code=202,
    openapi_extra=BODY_SCHEMA,
    responses={
        200: {"model": JobPublic, "description": "Finished within the wait (sync mode)"},
        202: {"model": JobAccepted, "description": "Accepted; poll Location"},
        409: {"model": ErrorPublic, "description": "Idempotency key reused with another body"},
        413: {"model": ErrorPublic, "description": "Body too large"},
        415: {"model": ErrorPublic, "description": "Body is not JSON"},
        422: {"model": ErrorPublic, "description": "Invalid features"},
        429: {"model": ErrorPublic, "description": "Queue full; retry after Retry-After"},
        **ERROR_RESPONSES,
    },
)
async def predict(
    request: Request,
    gateway: GatewayDep,
    principal: PredictScope,
    wait: Annotated[float | None, Query(ge=0, description="Seconds to wait for the result")] = None,
    prefer: Annotated[str | None, Header(description="RFC 7240, e.g. wait=5")] = None,
    idempotency: Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)] = None,
) -> JSONResponse:
    """Predict one instance or a batch; 202 with a job id, or 200 with the result."""
    settings = gateway.settings
    _check_json(request)
    body = await request.body()
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"invalid JSON: {exc}", ["body"], "json_invalid") from None
    production = gateway.catalog.require_production()
    request_id, rows, _ = parse_predict_body(data, production, settings.api.max_instances)
    if gateway.submitter.queue_depth >= settings.api.max_queue_depth:
        raise TooManyRequests(
            f"the predict queue holds {gateway.submitter.queue_depth} messages "
            f"(limit {settings.api.max_queue_depth}); retry later",
            settings.api.retry_after_seconds,
        )
    timeout = wait_seconds(wait, prefer, settings.api.max_wait_seconds)
    job_id = None
    key = idempotency or (request_id if settings.api.idempotency_from_request_id else None)
    if key:
        job_id, replay = await _claim(gateway, principal.fingerprint, key, body)
        if replay:
            return await _replay(gateway, job_id, request_id, timeout)
    try:
        outcome = await submit_and_wait(
            gateway.submitter,
            gateway.listener,
            rows=rows,
            features=production.feature_names,
            request_id=request_id,
            wait=timeout,
            expires_in=(timeout + settings.api.sync_grace_seconds)
            if timeout
            else settings.api.jobs_ttl_seconds,
            job_id=job_id,
        )
    except BaseException:
        if key:
            await gateway.redis.delete(idempotency_key(f"{principal.fingerprint}:{key}"))
        raise
    if outcome.result is not None:
        return JSONResponse(outcome.result)
    return accepted(outcome.job_id, request_id)


async def _claim(gateway, owner: str, key: str, body: bytes) -> tuple[str, bool]:
    """Reserve the idempotency key for a new job, or return the job it already names."""
    fingerprint = hashlib.sha256(body).hexdigest()[:32]
    job_id = new_id()
    redis_key = idempotency_key(f"{owner}:{key}")
    window = gateway.settings.api.idempotency_window_seconds
    if await gateway.redis.set(redis_key, f"{job_id} {fingerprint}", nx=True, ex=window):
        return job_id, False
    existing = await gateway.redis.get(redis_key)
    if existing is None:  # expired between the two calls: take it
        await gateway.redis.set(redis_key, f"{job_id} {fingerprint}", ex=window)
        return job_id, False
    existing_id, existing_fp = existing.decode().split(" ", 1)
    if existing_fp != fingerprint:
        raise IdempotencyConflict(
            "this Idempotency-Key was already used with a different body; use a new key"
        )
    return existing_id, True


async def _replay(gateway, job_id: str, request_id: str | None, wait: float) -> JSONResponse:
    future = gateway.listener.register(job_id) if wait else None
    try:
        record = await job_status(gateway.redis, job_id, gateway.settings.api.jobs_ttl_seconds)
    except BaseException:
        gateway.listener.discard(job_id)
        raise
    if record.get("status") in FINISHED:
        gateway.listener.discard(job_id)
        return JSONResponse(record, headers={"Idempotent-Replayed": "true"})
    if future is not None:
        result = await await_result(gateway.submitter, gateway.listener, job_id, future, wait)
        if result is not None:
            return JSONResponse(result, headers={"Idempotent-Replayed": "true"})
    response = accepted(job_id, request_id, deduplicated=True)
    response.headers["Idempotent-Replayed"] = "true"
    return response

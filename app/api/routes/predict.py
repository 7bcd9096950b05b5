"""POST /predict: validate, group into a message, answer 202 (async) or wait for the result."""

from __future__ import annotations

import hashlib
import re

import redis.exceptions
from fastapi import APIRouter, Request

from app.api.plain_route import PlainRoute
from app.errors import (
    BadRequest,
    IdempotencyConflict,
    OutcomeUnknown,
    UnsupportedMediaType,
    clip,
    never_ran,
)
from app.responses import JSONResponse, RawJSONResponse, accepted
from app.schemas import (
    ERROR_RESPONSES,
    ErrorPublic,
    JobAccepted,
    JobPublic,
    PredictBatch,
    PredictSingle,
)
from app.services.dataplane import await_result, submit_and_wait
from app.services.job_status import FINISHED, job_status
from app.services.rows import load_json, parse_predict_body, read_body
from app.services.submitter import AlreadyClaimed, Claim
from app.state import Gateway
from core.messages import idempotency_key, new_id

router = APIRouter(tags=["predict"])

MAX_IDEMPOTENCY_KEY = 200
REPLAYED = {"Idempotent-Replayed": "true"}
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d+(?:\.\d+)?)")
_PREFER_READ = 1024  # characters of a Prefer header read: searching 1 MB took ~15 ms
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


def wait_seconds(query: float | None, prefer: str | None, ceiling: float) -> float:
    """``?wait=`` wins over ``Prefer: wait=`` (RFC 7240); both are capped at the ceiling."""
    if query is None and prefer:
        match = _PREFER_WAIT.search(prefer, 0, _PREFER_READ)
        query = float(match.group(1)) if match else None
    return min(query or 0.0, ceiling)


def _check_json(request: Request) -> None:
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaType(
            "send the body as JSON with Content-Type: application/json "
            f"(got {clip(content_type)!r})"
        )


PARAMETERS = [
    {
        "name": "wait",
        "in": "query",
        "required": False,
        "description": "Seconds to wait for the result (200); 202 when it is not ready by then",
        "schema": {"type": "number", "minimum": 0},
    },
    {
        "name": "Prefer",
        "in": "header",
        "required": False,
        "description": "RFC 7240 preference, e.g. `wait=5` (the query parameter wins)",
        "schema": {"type": "string"},
    },
    {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": "Repeat a request safely: the same key returns the same job",
        "schema": {"type": "string", "maxLength": MAX_IDEMPOTENCY_KEY},
    },
    {
        "name": "X-API-Key",
        "in": "header",
        "required": False,
        "description": "API key with the `predict` scope",
        "schema": {"type": "string"},
    },
]


def _wait_param(request: Request, limits) -> float:
    raw = request.query_params.get("wait")
    if raw is None:
        return wait_seconds(None, request.headers.get("prefer"), limits.max_wait)
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(
            "must be a number of seconds", ["query", "wait"], "float_parsing"
        ) from None
    if not value >= 0:  # also refuses nan
        raise BadRequest("must be at least 0", ["query", "wait"], "greater_than_equal")
    return wait_seconds(value, None, limits.max_wait)


def _idempotency_header(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and not 0 < len(key) <= MAX_IDEMPOTENCY_KEY:
        raise BadRequest(
            f"must be 1 to {MAX_IDEMPOTENCY_KEY} characters",
            ["header", "Idempotency-Key"],
            "string_too_long",
        )
    return key


@router.post(
    "/predict",
    status_code=202,
    openapi_extra={**BODY_SCHEMA, "parameters": PARAMETERS},
    responses={
        200: {"model": JobPublic, "description": "Finished within the wait (sync mode)"},
        202: {"model": JobAccepted, "description": "Accepted; poll Location"},
        408: {"model": ErrorPublic, "description": "Body not received in time"},
        409: {"model": ErrorPublic, "description": "Idempotency key reused with another body"},
        413: {"model": ErrorPublic, "description": "Body too large"},
        415: {"model": ErrorPublic, "description": "Body is not JSON"},
        422: {"model": ErrorPublic, "description": "Invalid features"},
        429: {"model": ErrorPublic, "description": "Queue full; retry after Retry-After"},
        **ERROR_RESPONSES,
    },
)
async def predict(request: Request) -> JSONResponse:
    """Predict one instance or a batch; 202 with a job id, or 200 with the result."""
    # The hottest route: parameters are read by hand, not through FastAPI's dependency
    # machinery, which costs more per request than everything below together.
    gateway: Gateway = request.app.state.gateway
    limits = gateway.limits
    principal = gateway.keys.authorize(request.headers.get("x-api-key"), "predict")
    _check_json(request)
    timeout = _wait_param(request, limits)
    idempotency = _idempotency_header(request)
    body = await read_body(request, limits.max_body_bytes, limits.body_timeout)
    production = gateway.catalog.require_production()
    data = load_json(body, production, limits.max_instances)
    request_id, rows, _ = parse_predict_body(data, production, limits.max_instances)
    job_id = new_id()
    key = idempotency or (request_id if limits.idempotency_from_request_id else None)
    claim = None
    if key:
        digest = hashlib.sha256(body).hexdigest()[:32]
        claim = Claim(idempotency_key(f"{principal.owner}:{key}"), f"{job_id} {digest}")
        held = await gateway.redis.get(claim.key)
        if held is not None:  # a retry: answer with the job the key names, queue nothing
            return await _replay(gateway, held.decode(), claim, request_id, timeout)
    gateway.admission.check()
    try:
        outcome = await submit_and_wait(
            gateway.submitter,
            gateway.listener,
            rows=rows,
            features=production.feature_names,
            request_id=request_id,
            wait=timeout,
            expires_in=timeout + limits.sync_grace if timeout else limits.jobs_ttl,
            owner=principal.owner,
            job_id=job_id,
            claim=claim,
        )
    except AlreadyClaimed as exc:  # a concurrent request with the same key queued its job first
        return await _replay(gateway, exc.held, claim, request_id, timeout)
    except redis.exceptions.RedisError as exc:
        if never_ran(exc):
            raise
        raise OutcomeUnknown(job_id, exc) from exc
    if outcome.result is not None:
        return RawJSONResponse(outcome.result)
    return accepted(outcome.job_id, request_id=request_id)


# Requests are served here; the FastAPI route above documents them (app/api/plain_route.py).
plain_routes = [PlainRoute("/predict", predict, methods=["POST"])]


async def _replay(gateway, held: str, claim: Claim, request_id, wait: float) -> JSONResponse:
    """Answer a request whose idempotency key already names a job: that job, or 409 if the
    key came with another body. A claim is written with its job, so the job exists."""
    job_id, _, digest = held.partition(" ")
    if digest != claim.value.partition(" ")[2]:
        raise IdempotencyConflict(
            "this Idempotency-Key was already used with a different body; use a new key"
        )
    future = gateway.listener.register(job_id) if wait else None
    try:
        record = await job_status(gateway.redis, job_id, gateway.limits.jobs_ttl)
    except BaseException:
        gateway.listener.discard(job_id)
        raise
    if record.get("status") in FINISHED:
        gateway.listener.discard(job_id)
        return JSONResponse(record, headers=REPLAYED)
    if future is not None:
        result = await await_result(gateway.submitter, gateway.listener, job_id, future, wait)
        if result is not None:
            return RawJSONResponse(result, headers=REPLAYED)
    response = accepted(job_id, request_id=request_id, deduplicated=True)
    response.headers.update(REPLAYED)
    return response

"""One place maps errors to HTTP answers; no client input can produce a 500.

Answers on the Open Inference Protocol's routes (``/v2``...) take its error shape,
``{"error": "..."}``, with the same status codes, except a refused body: 400 there, 422 here.
"""

from __future__ import annotations

import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from loguru import logger
from redis.asyncio.sentinel import MasterNotFoundError
from starlette.exceptions import HTTPException

from app.responses import JSONResponse
from core.errors import MLOpsError


def clip(text: str, keep: int = 100) -> str:
    """A client's string as an error answer echoes it: cut short, so the answer stays small."""
    return text if len(text) <= keep else f"{text[:keep]}... ({len(text)} characters)"


class JobNotFound(MLOpsError):
    status_code = 404
    reason = "job_not_found"


class BadRequest(MLOpsError):
    """Input the schema cannot express (feature names, finiteness, JSON syntax): 422."""

    status_code = 422
    reason = "invalid_request"

    def __init__(self, message: str, loc: list | None = None, kind: str = "value_error"):
        super().__init__(message)
        self.loc = loc or ["body"]
        self.kind = kind


class TooManyRequests(MLOpsError):
    status_code = 429
    reason = "backpressure"

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class PayloadTooLarge(MLOpsError):
    status_code = 413
    reason = "too_large"


class RequestTimeout(MLOpsError):
    status_code = 408
    reason = "timeout"


class UnsupportedMediaType(MLOpsError):
    status_code = 415
    reason = "unsupported_media_type"


class Conflict(MLOpsError):
    status_code = 409
    reason = "conflict"


class IdempotencyConflict(MLOpsError):
    status_code = 409
    reason = "idempotency_key_reused"


class OutcomeUnknown(MLOpsError):
    """Redis may have applied the write whose answer was lost: say which job it would be."""

    status_code = 503
    reason = "outcome_unknown"

    def __init__(self, job_id: str, cause: Exception):
        super().__init__(
            f"Redis {_what_happened(cause)}: job {job_id} may or may not have been queued. "
            f"GET /jobs/{job_id} tells (404: it was not); a retry with the same "
            "Idempotency-Key returns this job if it was queued"
        )
        self.job_id = job_id


class NotReplicated(redis.exceptions.RedisError):
    """Queued on the primary, but no replica confirmed the write in time
    (``api.replica_ack_ms``, app/services/submitter.py)."""


def _what_happened(exc: Exception) -> str:
    if isinstance(exc, redis.exceptions.TimeoutError):
        return "did not answer in time"
    if isinstance(exc, NotReplicated):
        return f"queued the job but {exc}"
    return f"dropped the connection ({type(exc).__name__})"


def never_ran(exc: redis.exceptions.RedisError) -> bool:
    """True when Redis certainly did not run the command: it refused it (out of memory,
    loading), or no connection could be made. A timeout or a connection lost after the
    command was sent leaves the outcome unknown."""
    if isinstance(exc, redis.exceptions.ResponseError | redis.exceptions.BusyLoadingError):
        return True
    if isinstance(exc, MasterNotFoundError):  # no sentinel named a primary: nothing was sent
        return True
    return "connecting to" in str(exc)  # redis-py's message for a failed connect


class ResultTimeout(MLOpsError):
    """A synchronous-only route (V2 infer) whose job did not finish within the wait."""

    status_code = 504
    reason = "result_timeout"


class JobFailed(MLOpsError):
    """A synchronous-only route's job ended in FAILURE: 400 when its rows were refused."""

    reason = "job_failed"

    def __init__(self, message: str, status_code: int):
        super().__init__(message)
        self.status_code = status_code


class AuthError(MLOpsError):
    status_code = 401
    reason = "unauthenticated"


class Forbidden(MLOpsError):
    status_code = 403
    reason = "forbidden"


V2_PREFIX = "/v2"


def is_v2(request: Request) -> bool:
    """An Open Inference Protocol route: its errors are ``{"error": "..."}``."""
    path = request.scope.get("path", "")
    return path == V2_PREFIX or path.startswith(V2_PREFIX + "/")


def _v2_message(exc: MLOpsError) -> str:
    if isinstance(exc, BadRequest) and exc.loc != ["body"]:
        return f"{'.'.join(map(str, exc.loc))}: {exc.message}"
    return exc.message


async def _domain_error(request: Request, exc: MLOpsError) -> JSONResponse:
    if is_v2(request):
        status = 400 if isinstance(exc, BadRequest) else exc.status_code
        return JSONResponse({"error": _v2_message(exc)}, status, _headers(exc))
    if isinstance(exc, BadRequest):
        detail = [{"loc": exc.loc, "msg": exc.message, "type": exc.kind}]
        return JSONResponse({"detail": detail, "reason": exc.reason}, status_code=422)
    body = {"detail": exc.message, "reason": exc.reason, **getattr(exc, "extra", {})}
    if isinstance(exc, OutcomeUnknown):
        body["job_id"] = exc.job_id
    return JSONResponse(body, status_code=exc.status_code, headers=_headers(exc))


def _headers(exc: MLOpsError) -> dict[str, str]:
    headers = {}
    if isinstance(exc, TooManyRequests):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, AuthError):
        headers["WWW-Authenticate"] = "ApiKey"
    if isinstance(exc, OutcomeUnknown):
        headers["Retry-After"] = "1"
    return headers


async def _redis_down(request: Request, exc: Exception) -> JSONResponse:
    text = str(exc)
    if "OOM" in text or "maxmemory" in text:
        detail = "Redis is out of memory; nothing was queued, retry later"
    elif never_ran(exc):
        detail = f"Redis is unavailable ({type(exc).__name__}); nothing was queued, retry later"
    else:
        # The command may have reached Redis before the answer was lost: it may have run.
        detail = (
            f"Redis {_what_happened(exc)}; a request that queues work may or may not have "
            "been queued: retry it with the same Idempotency-Key"
        )
    logger.warning("503: {}", text)
    body = (
        {"error": detail} if is_v2(request) else {"detail": detail, "reason": "redis_unavailable"}
    )
    return JSONResponse(
        body,
        status_code=503,
        headers={"Retry-After": "1"},
    )


async def _invalid_parameters(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's own 422, with each echoed input clipped (a 60 KB path came back whole) and
    the ``reason`` every other error answer carries; on V2 paths, the protocol's 400."""
    if is_v2(request):
        text = "; ".join(
            f"{'.'.join(map(str, error['loc']))}: {error['msg']}" for error in exc.errors()
        )
        return JSONResponse({"error": clip(text, 1000)}, status_code=400)
    errors = [
        {**error, "input": clip(error["input"])} if isinstance(error.get("input"), str) else error
        for error in exc.errors()
    ]
    return JSONResponse(
        {"detail": jsonable_encoder(errors), "reason": BadRequest.reason}, status_code=422
    )


HTTP_REASONS = {404: "not_found", 405: "method_not_allowed"}


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """The router's own 404 (no route) and 405: in the V2 shape on V2 paths, elsewhere with
    a ``reason`` like every other error."""
    if is_v2(request):
        return JSONResponse(
            {"error": f"{exc.detail}: {request.method} {clip(request.url.path)}"},
            exc.status_code,
            exc.headers,
        )
    body = {"detail": exc.detail, "reason": HTTP_REASONS.get(exc.status_code, "http_error")}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(MLOpsError, _domain_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid_parameters)
    app.add_exception_handler(redis.exceptions.RedisError, _redis_down)

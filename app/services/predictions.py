"""The path of every prediction request once its rows are parsed, whatever its protocol
(``/predict``, the Open Inference Protocol's ``/v2/.../infer``): idempotency, admission,
queue, wait. Each route turns the :class:`Outcome` into its own answer."""

from __future__ import annotations

import redis.exceptions
from starlette.requests import Request

from app.auth import Principal
from app.errors import BadRequest, OutcomeUnknown, never_ran
from app.services import idempotency
from app.services.catalog import ModelCatalog
from app.services.dataplane import Outcome, submit_and_wait
from app.services.idempotency import AlreadyClaimed
from app.state import Gateway
from core.messages import new_id

IDEMPOTENCY_KEY = "Idempotency-Key"
API_KEY = "X-API-Key"


def idempotency_header(request: Request) -> str | None:
    key = request.headers.get(IDEMPOTENCY_KEY)
    if key is not None and not 0 < len(key) <= idempotency.MAX_KEY:
        raise BadRequest(
            f"must be 1 to {idempotency.MAX_KEY} characters",
            ["header", IDEMPOTENCY_KEY],
            "string_too_long",
        )
    return key


async def queue_and_wait(
    gateway: Gateway,
    *,
    catalog: ModelCatalog,
    principal: Principal,
    body: bytes,
    rows: list[list],
    features: tuple[str, ...],
    request_id: str | None,
    key: str | None,
    wait: float,
    version: int | None = None,
) -> Outcome:
    """Queue the rows as one job of ``catalog``'s model (``version`` pinned, else production)
    and wait up to ``wait`` seconds; a retry with the same idempotency key gets the first
    request's job instead (``replayed``)."""
    api = gateway.settings.api
    job_id = new_id()
    key = key or (request_id if api.idempotency_from_request_id else None)
    claim = None
    if key:
        target = catalog.name if version is None else f"{catalog.name} v{version}"
        claim = idempotency.new_claim(principal.owner, key, job_id, body, target)
        held = await idempotency.held_value(gateway.redis, claim)
        if held is not None:  # a retry: answer with the job the key names, queue nothing
            return await idempotency.replay(gateway, held, claim, request_id, wait)
    gateway.admission.check()
    try:
        return await submit_and_wait(
            gateway.submitter,
            gateway.listener,
            rows=rows,
            features=features,
            request_id=request_id,
            wait=wait,
            expires_in=wait + api.sync_grace_seconds if wait else api.jobs_ttl_seconds,
            owner=principal.owner,
            job_id=job_id,
            claim=claim,
            model=catalog.name,
            version=version,
        )
    except AlreadyClaimed as exc:  # a concurrent request with the same key queued its job first
        return await idempotency.replay(gateway, exc.held, claim, request_id, wait)
    except redis.exceptions.RedisError as exc:
        if never_ran(exc):
            raise
        raise OutcomeUnknown(job_id, exc) from exc

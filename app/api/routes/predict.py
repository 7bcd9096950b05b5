"""POST /predict: validate, group into a message, answer 202 (async) or wait for the result.

:func:`serve` answers the requests, from a plain Starlette route in front of the documented one
(app/api/plain_route.py), and reads its parameters by hand: FastAPI's dependency machinery
costs more per request than everything :func:`serve` does. The FastAPI route :func:`predict`
is there for the OpenAPI schema (``/docs``, the fuzz tests): it declares the same parameters,
with the names, models and limits :func:`serve` parses them with.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Body, Header, Path, Query, Request
from starlette.responses import Response

from app.api.deps import ApiKeyHeader
from app.api.plain_route import PlainRoute
from app.errors import BadRequest, UnsupportedMediaType, clip
from app.responses import RawJSONResponse, accepted
from app.schemas import ERROR_RESPONSES, ErrorPublic, PredictBatch, PredictSingle
from app.services import idempotency
from app.services.dataplane import Outcome
from app.services.idempotency import REPLAYED
from app.services.predictions import API_KEY, IDEMPOTENCY_KEY, idempotency_header, queue_and_wait
from app.services.rows import load_json, parse_predict_body, read_body
from app.state import Gateway
from core.jobs import JobAccepted, JobPublic, accepted_body
from core.settings import MODEL_NAME

router = APIRouter(tags=["predict"])

WAIT = "wait"
PREFER = "Prefer"
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d+(?:\.\d+)?)")
_PREFER_READ = 1024  # characters of a Prefer header read: searching 1 MB took ~15 ms

# The parameters as documented; serve() reads the same ones by hand.
PredictBody = Annotated[PredictSingle | PredictBatch, Body()]
WaitQuery = Annotated[
    float | None,
    Query(
        alias=WAIT,
        ge=0,
        description="Seconds to wait for the result (200); 202 when it is not ready by then. "
        "Capped at `api.max_wait_seconds`",
    ),
]
PreferHeader = Annotated[
    str | None,
    Header(
        alias=PREFER,
        description="RFC 7240 preference, e.g. `wait=5` (the query parameter wins)",
    ),
]
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias=IDEMPOTENCY_KEY,
        min_length=1,
        max_length=idempotency.MAX_KEY,
        description="Repeat a request safely: the same key returns the same job",
    ),
]


def wait_seconds(query: float | None, prefer: str | None, ceiling: float) -> float:
    """``?wait=`` wins over ``Prefer: wait=`` (RFC 7240); both are capped at the ceiling."""
    if query is None and prefer:
        match = _PREFER_WAIT.search(prefer, 0, _PREFER_READ)
        query = float(match.group(1)) if match else None
    return min(query or 0.0, ceiling)


def check_json(request: Request) -> None:
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaType(
            "send the body as JSON with Content-Type: application/json "
            f"(got {clip(content_type)!r})"
        )


def _wait_param(request: Request, ceiling: float) -> float:
    raw = request.query_params.get(WAIT)
    if raw is None:
        return wait_seconds(None, request.headers.get(PREFER), ceiling)
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest("must be a number of seconds", ["query", WAIT], "float_parsing") from None
    if not value >= 0:  # also refuses nan
        raise BadRequest("must be at least 0", ["query", WAIT], "greater_than_equal")
    return wait_seconds(value, None, ceiling)


async def serve(request: Request) -> Response:
    """POST /predict and /models/{name}/predict, as served: the parameters of :func:`predict`,
    read by hand."""
    gateway: Gateway = request.app.state.gateway
    catalog = gateway.catalogs.get(request.path_params.get("name"))
    api = gateway.settings.api
    principal = gateway.keys.authorize(request.headers.get(API_KEY), "predict")
    check_json(request)
    timeout = _wait_param(request, api.max_wait_seconds)
    key = idempotency_header(request)
    body = await read_body(
        request, api.max_body_bytes, gateway.settings.gateway.body_timeout_seconds
    )
    production = catalog.require_production()
    data = load_json(body, production, api.max_instances)
    request_id, rows, _ = parse_predict_body(data, production, api.max_instances)
    outcome = await queue_and_wait(
        gateway,
        catalog=catalog,
        principal=principal,
        body=body,
        rows=rows,
        features=production.feature_names,
        request_id=request_id,
        key=key,
        wait=timeout,
    )
    return answer(outcome)


def answer(outcome: Outcome) -> Response:
    """200 with the result, or 202 pointing at the job; marked when it replays a job."""
    headers = REPLAYED if outcome.replayed else None
    if outcome.result is not None:
        return RawJSONResponse(outcome.result, headers=headers)
    response = accepted(
        accepted_body(outcome.job_id, outcome.request_id, deduplicated=outcome.replayed)
    )
    if headers:
        response.headers.update(headers)
    return response


PREDICT_RESPONSES: dict[int | str, dict] = {
    200: {"model": JobPublic, "description": "Finished within the wait (sync mode)"},
    202: {"model": JobAccepted, "description": "Accepted; poll Location"},
    408: {"model": ErrorPublic, "description": "Body not received in time"},
    409: {"model": ErrorPublic, "description": "Idempotency key reused with another body"},
    413: {"model": ErrorPublic, "description": "Body too large"},
    415: {"model": ErrorPublic, "description": "Body is not JSON"},
    422: {"model": ErrorPublic, "description": "Invalid features"},
    429: {"model": ErrorPublic, "description": "Queue full; retry after Retry-After"},
    **ERROR_RESPONSES,
}
ModelName = Annotated[str, Path(pattern=MODEL_NAME, description="A served model's name")]


@router.post("/predict", status_code=202, responses=PREDICT_RESPONSES)
async def predict(
    request: Request,
    body: PredictBody,
    x_api_key: ApiKeyHeader,
    wait: WaitQuery = None,
    prefer: PreferHeader = None,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    """Predict one instance or a batch; 202 with a job id, or 200 with the result."""
    return await serve(request)  # plain_routes answer first; the same answer if they did not


@router.post(
    "/models/{name}/predict",
    status_code=202,
    responses={**PREDICT_RESPONSES, 404: {"model": ErrorPublic, "description": "No such model"}},
)
async def predict_model(
    request: Request,
    body: PredictBody,
    name: ModelName,
    x_api_key: ApiKeyHeader,
    wait: WaitQuery = None,
    prefer: PreferHeader = None,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    """Predict with the model `name`: the bodies and answers of POST /predict."""
    return await serve(request)


plain_routes = [
    PlainRoute("/predict", serve, methods=["POST"]),
    PlainRoute("/models/{name}/predict", serve, methods=["POST"]),
]

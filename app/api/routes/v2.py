"""The Open Inference Protocol (KServe V2) over REST: health, metadata, readiness and inference.

Each model is served under ``/v2/models/{name}``; ``/versions/{version}`` pins a version (it
is loaded from the store by the workers, production or not). Inference takes one input tensor,
``input-0`` of shape ``[n, features]``, and answers the outputs ``label`` and, for a model with
classes, ``probabilities`` (app/services/tensors.py). It goes through the path of
``POST /predict`` (app/services/predictions.py: auth, idempotency, admission, the same queues,
batching and workers) and is synchronous: it waits up to ``api.max_wait_seconds``, then answers
504 naming the job, whose result ``GET /jobs/{id}`` still gives. Errors are ``{"error": ...}``
(app/errors.py). Like ``/predict``, inference is served by a plain route in front of the
documented one (app/api/plain_route.py).
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import orjson
from fastapi import APIRouter, Body, Header, Path, Request
from starlette.responses import Response

from app.api.deps import ApiKeyHeader, GatewayDep, OptionalKeyHeader
from app.api.plain_route import PlainRoute
from app.errors import BadRequest, JobFailed, ResultTimeout, clip
from app.responses import JSONResponse
from app.schemas import (
    V2_ERRORS,
    V2Error,
    V2InferenceRequest,
    V2InferenceResponse,
    V2ModelMetadata,
    V2ModelReady,
    V2ServerLive,
    V2ServerMetadata,
    V2ServerReady,
)
from app.services.catalog import ModelCatalog, Production
from app.services.dataplane import Outcome
from app.services.idempotency import MAX_KEY, REPLAYED
from app.services.predictions import API_KEY, IDEMPOTENCY_KEY, idempotency_header, queue_and_wait
from app.services.rows import load_json, read_body
from app.services.tensors import (
    INPUT,
    LABEL,
    PROBABILITIES,
    InferRequest,
    label_datatype,
    output_tensors,
    parse_infer_request,
)
from app.services.workers import live_workers, readiness
from app.state import Gateway
from core.errors import IntegrityError, ModelNotFound, NoProductionModel
from core.jobs import SUCCESS
from core.messages import PREDICT_QUEUE
from core.versions import API_VERSION

router = APIRouter(prefix="/v2", tags=["v2 (Open Inference Protocol)"])

SERVER_NAME = "two-mlops"
EXTENSIONS = ["binary_tensor_data"]  # Triton's: tensors as raw bytes after the JSON (inputs)
BINARY_HEADER = "Inference-Header-Content-Length"
JSON_SLACK = 256  # separators a V2 body holds beside its rows (parameters, outputs...)
JSON_NESTING = 5  # {"inputs": [{"data": [[...]]}]}: the deepest accepted body
REFUSED_ROWS = frozenset({"schema_mismatch", "prediction_error"})  # job failures that are 400s
MAX_VERSION = 10**9

ModelName = Annotated[str, Path(description="A served model's name (404 if none)")]
ModelVersion = Annotated[
    str, Path(description="A version number of the model (404 if it has no such version)")
]


def _small_number(text: str) -> bool:
    """ASCII digits, few enough for int() (it raises from 4,300 digits on; str.isdigit()
    alone also takes other scripts' digits)."""
    return text.isascii() and text.isdigit() and len(text) <= 18


# -- the model a request names ----------------------------------------------------------------
def _version_number(catalog: ModelCatalog, version: str) -> int:
    if _small_number(version) and 1 <= int(version) <= MAX_VERSION:
        return int(version)
    raise ModelNotFound(
        f"model {catalog.name!r} has no version {clip(version)!r} (versions are numbers)"
    )


async def _production(catalog: ModelCatalog, version: str | None) -> tuple[Production, int | None]:
    """The version a request names (pinned) or the production one (None)."""
    if version is None:
        return catalog.require_production(), None
    number = _version_number(catalog, version)
    return await catalog.pinned(number), number


def _outputs(production: Production) -> tuple[str, ...]:
    return (LABEL, PROBABILITIES) if production.metadata.classes else (LABEL,)


# -- server ---------------------------------------------------------------------------------------
@router.get("", response_model=V2ServerMetadata)
async def server_metadata() -> JSONResponse:
    """Server metadata: name, version and the extensions supported."""
    return JSONResponse({"name": SERVER_NAME, "version": API_VERSION, "extensions": EXTENSIONS})


@router.get("/health/live", response_model=V2ServerLive)
async def server_live() -> JSONResponse:
    """The server answers (a liveness probe)."""
    return JSONResponse({"live": True})


@router.get(
    "/health/ready",
    response_model=V2ServerReady,
    responses={503: {"model": V2Error, "description": "Not ready; `error` says why"}},
)
async def server_ready(gateway: GatewayDep, x_api_key: OptionalKeyHeader = None) -> JSONResponse:
    """Ready when `GET /ready` is (Redis, a `predict` worker, a production model); 503 if not.
    In production only a caller with a valid API key is told why."""
    reasons, _, _ = await readiness(gateway)
    if not reasons:
        return JSONResponse({"ready": True})
    shown = gateway.settings.env != "production" or gateway.keys.knows(x_api_key)
    error = "; ".join(reasons) if shown else "not ready"
    return JSONResponse({"ready": False, "error": error}, status_code=503)


# -- models ---------------------------------------------------------------------------------------
async def _metadata(gateway: Gateway, name: str, version: str | None) -> JSONResponse:
    catalog = gateway.catalogs.get(name)
    production, _ = await _production(catalog, version)
    meta = production.metadata
    outputs = [{"name": LABEL, "datatype": label_datatype(_sample(meta.classes)), "shape": [-1]}]
    if PROBABILITIES in _outputs(production):
        outputs.append(
            {"name": PROBABILITIES, "datatype": "FP64", "shape": [-1, len(meta.classes)]}
        )
    versions = await asyncio.to_thread(catalog.store.versions)
    return JSONResponse(
        {
            "name": catalog.name,
            "versions": [str(v) for v in versions],
            "platform": f"sklearn_{meta.artifact_format}",
            "inputs": [
                {"name": INPUT, "datatype": "FP64", "shape": [-1, len(production.feature_names)]}
            ],
            "outputs": outputs,
        }
    )


def _sample(classes: list) -> object:
    return classes[0] if classes else 0.0  # no classes: a regressor's values


async def _model_ready(gateway: Gateway, name: str, version: str | None) -> JSONResponse:
    catalog = gateway.catalogs.get(name)
    try:
        await _production(catalog, version)
    except (NoProductionModel, IntegrityError) as exc:
        body = {"name": catalog.name, "ready": False, "error": exc.message}
        return JSONResponse(body, status_code=503)
    model = gateway.settings.models.get(catalog.name)
    queue = model.queue if model is not None else PREDICT_QUEUE
    workers = await live_workers(gateway.redis, gateway.settings.worker.heartbeat_seconds)
    if not any(queue in (w.get("queues") or ()) for w in workers):
        error = f"no live worker consumes the {queue!r} queue of model {catalog.name!r}"
        return JSONResponse({"name": catalog.name, "ready": False, "error": error}, 503)
    return JSONResponse({"name": catalog.name, "ready": True})


MODEL_ERRORS = {**V2_ERRORS, 409: {"model": V2Error, "description": "Integrity check failed"}}
READY_ERRORS = {
    **MODEL_ERRORS,
    503: {"model": V2Error, "description": "Not ready: no such version served, or no worker"},
}


@router.get("/models/{name}", response_model=V2ModelMetadata, responses=MODEL_ERRORS)
async def model_metadata(gateway: GatewayDep, name: ModelName, x_api_key: ApiKeyHeader = None):
    """The model's versions, platform, input and output tensors (its production version's)."""
    gateway.keys.authorize(x_api_key, "predict")
    return await _metadata(gateway, name, None)


@router.get(
    "/models/{name}/versions/{version}", response_model=V2ModelMetadata, responses=MODEL_ERRORS
)
async def model_version_metadata(
    gateway: GatewayDep, name: ModelName, version: ModelVersion, x_api_key: ApiKeyHeader = None
):
    """The model's metadata, with the input and output tensors of this version."""
    gateway.keys.authorize(x_api_key, "predict")
    return await _metadata(gateway, name, version)


@router.get("/models/{name}/ready", response_model=V2ModelReady, responses=READY_ERRORS)
async def model_ready(gateway: GatewayDep, name: ModelName, x_api_key: ApiKeyHeader = None):
    """200 when the model has a production version and a live worker consumes its queue."""
    gateway.keys.authorize(x_api_key, "predict")
    return await _model_ready(gateway, name, None)


@router.get(
    "/models/{name}/versions/{version}/ready", response_model=V2ModelReady, responses=READY_ERRORS
)
async def model_version_ready(
    gateway: GatewayDep, name: ModelName, version: ModelVersion, x_api_key: ApiKeyHeader = None
):
    """200 when the version exists (and verifies) and a live worker consumes its queue."""
    gateway.keys.authorize(x_api_key, "predict")
    return await _model_ready(gateway, name, version)


# -- inference ------------------------------------------------------------------------------------
def _split_binary(request: Request, body: bytes) -> tuple[bytes, bytes | None]:
    """The JSON part of the body and, with the binary tensor data extension, the bytes after."""
    declared = request.headers.get(BINARY_HEADER)
    if declared is None:
        return body, None
    if not _small_number(declared) or int(declared) > len(body):
        raise BadRequest(
            f"header {BINARY_HEADER} must be the JSON part's length, at most the body's "
            f"{len(body)} bytes; got {clip(declared)!r}"
        )
    size = int(declared)
    return body[:size], body[size:]


async def serve_infer(request: Request) -> Response:
    """POST /v2/models/{name}[/versions/{version}]/infer, as served."""
    gateway: Gateway = request.app.state.gateway
    catalog = gateway.catalogs.get(request.path_params["name"])
    api = gateway.settings.api
    principal = gateway.keys.authorize(request.headers.get(API_KEY), "predict")
    key = idempotency_header(request)
    body = await read_body(
        request, api.max_body_bytes, gateway.settings.gateway.body_timeout_seconds
    )
    production, version = await _production(catalog, request.path_params.get("version"))
    text, binary = _split_binary(request, body)
    data = load_json(text, production, api.max_instances, JSON_SLACK, JSON_NESTING)
    parsed = parse_infer_request(
        data, production.feature_names, api.max_instances, _outputs(production), binary
    )
    outcome = await queue_and_wait(
        gateway,
        catalog=catalog,
        principal=principal,
        body=body,
        rows=parsed.rows,
        features=production.feature_names,
        request_id=parsed.id,
        key=key,
        wait=api.max_wait_seconds,
        version=version,
    )
    return infer_answer(outcome, parsed, api.max_wait_seconds)


def infer_answer(outcome: Outcome, parsed: InferRequest, waited: float) -> JSONResponse:
    """The inference response of a finished job; 504 if it did not finish within the wait."""
    if outcome.result is None:
        raise ResultTimeout(
            f"job {outcome.job_id} did not finish within {waited:g} s (api.max_wait_seconds); "
            f"GET /jobs/{outcome.job_id} gives its result"
        )
    record = orjson.loads(outcome.result)
    if record.get("status") != SUCCESS:
        error = record.get("error") or {}
        reason = error.get("reason", "unknown")
        raise JobFailed(
            f"job {outcome.job_id} failed ({reason}): {error.get('message', '')}",
            400 if reason in REFUSED_ROWS else 503,
        )
    answer = {
        "model_name": record["model_name"],
        "model_version": str(record["model_version"]),
        "id": parsed.id if parsed.id is not None else outcome.job_id,
        "parameters": {
            "api_version": record.get("api_version", API_VERSION),
            "job_id": outcome.job_id,
        },
        "outputs": output_tensors(record, parsed.outputs),
    }
    if outcome.replayed:
        return JSONResponse(answer, headers=REPLAYED)
    return JSONResponse(answer)


# The documented routes: the plain routes below answer first, with the same handler.
InferBody = Annotated[V2InferenceRequest, Body()]
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias=IDEMPOTENCY_KEY,
        min_length=1,
        max_length=MAX_KEY,
        description="Repeat a request safely: the same key answers with the same job",
    ),
]
BinaryHeader = Annotated[
    str | None,
    Header(
        alias=BINARY_HEADER,
        description="Binary tensor data extension: the JSON part's length; the input's bytes "
        "(little-endian, `parameters.binary_data_size`) follow it",
    ),
]
INFER_RESPONSES = {
    **MODEL_ERRORS,
    408: {"model": V2Error, "description": "Body not received in time"},
    409: {"model": V2Error, "description": "Idempotency key reused with another body"},
    413: {"model": V2Error, "description": "Body too large"},
    429: {"model": V2Error, "description": "Queue full; retry after Retry-After"},
    504: {"model": V2Error, "description": "Not finished within api.max_wait_seconds"},
}


@router.post("/models/{name}/infer", response_model=V2InferenceResponse, responses=INFER_RESPONSES)
async def infer(
    request: Request,
    body: InferBody,
    name: ModelName,
    x_api_key: ApiKeyHeader = None,
    idempotency_key: IdempotencyKeyHeader = None,
    inference_header: BinaryHeader = None,
) -> Response:
    """Inference with the model's production version: `input-0` of shape `[n, features]`,
    answered with `label` and `probabilities` (or the `outputs` asked for)."""
    return await serve_infer(request)


@router.post(
    "/models/{name}/versions/{version}/infer",
    response_model=V2InferenceResponse,
    responses=INFER_RESPONSES,
)
async def infer_version(
    request: Request,
    body: InferBody,
    name: ModelName,
    version: ModelVersion,
    x_api_key: ApiKeyHeader = None,
    idempotency_key: IdempotencyKeyHeader = None,
    inference_header: BinaryHeader = None,
) -> Response:
    """Inference with this version of the model, production or not."""
    return await serve_infer(request)


plain_routes = [
    PlainRoute("/v2/models/{name}/infer", serve_infer, methods=["POST"]),
    PlainRoute("/v2/models/{name}/versions/{version}/infer", serve_infer, methods=["POST"]),
]

"""POST /models/{name}/feedback and POST /feedback (the default model's): true labels.

Served like /predict (app/api/plain_route.py): :func:`serve` parses the body by hand into the
models of app/schemas.py, so that a problem's ``loc`` is the field as sent
(``["body", "items", 3, "label"]``) whichever of the three shapes the body has; the FastAPI
routes below document it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Request
from loguru import logger
from starlette.responses import Response

from app.api.deps import ApiKeyHeader
from app.api.plain_route import PlainRoute
from app.api.routes.predict import ModelName, check_json
from app.responses import JSONResponse
from app.schemas import ERROR_RESPONSES, ErrorPublic, FeedbackBatch, FeedbackItem, FeedbackPublic
from app.services.feedback import check_size, parse_items, record_feedback
from app.services.predictions import API_KEY
from app.services.rows import load_json, read_body
from app.state import Gateway
from core.jobs import TRAIN
from core.single_flight import request_retrain_async

router = APIRouter(tags=["feedback"])

FEEDBACK_NESTING = 4  # {"items": [{"label": [...]}]}


async def serve(request: Request) -> Response:
    """POST /feedback and /models/{name}/feedback, as served."""
    gateway: Gateway = request.app.state.gateway
    catalog = gateway.catalogs.get(request.path_params.get("name"))
    principal = gateway.keys.authorize(request.headers.get(API_KEY), "predict")
    check_json(request)
    settings = gateway.settings
    feedback = settings.feedback_of(catalog.name)
    body = await read_body(
        request, settings.api.max_body_bytes, settings.gateway.body_timeout_seconds
    )
    check_size(body, feedback.max_labels)
    items = parse_items(load_json(body, nesting=FEEDBACK_NESTING), feedback.max_labels)
    gateway.admission.check_memory()  # a flood of feedback meets Redis's memory like predictions
    recorded = await record_feedback(
        gateway.redis,
        catalog,
        principal,
        items,
        max_pending=feedback.max_pending,
        window=feedback.quality_window,
        log_size=settings.prediction_log_of(catalog.name).max_entries,
        retry_after=settings.api.retry_after_seconds,
    )
    body = recorded.body
    if recorded.new_labels:
        gateway.metrics.feedback_labels(catalog.name).inc(recorded.new_labels)
        logger.bind(model=catalog.name).info(
            "feedback: {} label(s) recorded, {} repeat(s)", body["recorded"], body["repeats"]
        )
        body["retrain"] = await _labels_trigger(gateway, catalog.name, recorded)
    return JSONResponse(body)


async def _labels_trigger(gateway: Gateway, model: str, recorded) -> dict | None:
    """Queue (or join) a retrain once ``feedback.retrain_after_labels`` labels arrived since
    the last run took its snapshot; the labels stay recorded if that fails."""
    threshold = gateway.settings.feedback_of(model).retrain_after_labels
    if not threshold or model not in gateway.settings.models:
        return None
    if recorded.count - recorded.trained < threshold:
        return None
    try:
        job_id, joined = await request_retrain_async(
            gateway.redis,
            model,
            requested_by="labels trigger",
            ttl=gateway.settings.api.jobs_ttl_seconds,
            trigger="labels",
        )
    except Exception as exc:  # e.g. Redis timed out: the next feedback tries again
        logger.warning("labels trigger of {}: retrain not queued: {!r}", model, exc)
        return None
    if not joined:
        gateway.metrics.submitted(TRAIN, model).inc()
        logger.bind(model=model, job_id=job_id).info(
            "labels trigger: {} new labels since the last training: retrain {} queued",
            recorded.count - recorded.trained,
            job_id,
        )
    return {"job_id": job_id, "trigger": "labels", "joined": joined}


FeedbackBody = Annotated[FeedbackItem | FeedbackBatch | list[FeedbackItem], Body()]
RESPONSES: dict[int | str, dict] = {
    200: {"model": FeedbackPublic, "description": "Every label recorded (or a repeat)"},
    404: {"model": ErrorPublic, "description": "No such model, or no logged prediction for an id"},
    409: {"model": ErrorPublic, "description": "Another label is already recorded for a job"},
    413: {"model": ErrorPublic, "description": "Body too large"},
    415: {"model": ErrorPublic, "description": "Body is not JSON"},
    422: {"model": ErrorPublic, "description": "A label outside the version's classes..."},
    429: {"model": ErrorPublic, "description": "Too many labels waiting to be stored"},
    **ERROR_RESPONSES,
}


@router.post("/feedback", response_model=FeedbackPublic, responses=RESPONSES)
async def feedback(request: Request, body: FeedbackBody, x_api_key: ApiKeyHeader) -> Response:
    """The true labels of earlier predictions of the default model: one item, a list, or
    `{"items": [...]}`; all recorded or none."""
    return await serve(request)


@router.post("/models/{name}/feedback", response_model=FeedbackPublic, responses=RESPONSES)
async def feedback_model(
    request: Request, body: FeedbackBody, name: ModelName, x_api_key: ApiKeyHeader
) -> Response:
    """The true labels of earlier predictions of the model `name`: the bodies of POST
    /feedback."""
    return await serve(request)


plain_routes = [
    PlainRoute("/feedback", serve, methods=["POST"]),
    PlainRoute("/models/{name}/feedback", serve, methods=["POST"]),
]

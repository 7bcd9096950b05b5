"""Liveness, readiness and versions."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import GatewayDep, OptionalKeyHeader
from app.responses import JSONResponse
from app.schemas import VersionPublic
from app.services.workers import readiness, unserved
from core.messages import PREDICT_QUEUE
from core.versions import API_VERSION

router = APIRouter(tags=["system"])


@router.get("/health")
async def health() -> dict:
    """The gateway process is alive (no dependencies checked)."""
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "Not ready (reasons: see above)"}})
async def ready(gateway: GatewayDep, x_api_key: OptionalKeyHeader = None) -> JSONResponse:
    """Ready when Redis and the model store answer, a worker consumes `predict` and the
    default model has a production version; `warnings` says when no worker consumes `train`
    (retrains would wait), or another model has no production version or no worker on its
    queue. `models`: each model's production version and queue.

    In production only a caller with a valid API key (any scope) is told the reasons,
    warnings, model and workers; others get the status alone.
    """
    reasons, warnings, workers = await readiness(gateway)
    production = gateway.catalog.production
    models = _models(gateway)
    for model in models:
        if model["name"] == gateway.catalogs.default_name:
            continue
        if model["version"] is None:
            warnings.append(f"model {model['name']!r} has no production version")
        if workers and model["queue"] != PREDICT_QUEUE:
            warnings += unserved(workers, (model["queue"],))
    body = {
        "status": "not ready" if reasons else "ready",
        "reasons": reasons,
        "warnings": warnings,
        "model_name": gateway.catalog.store.model_name,
        "model_version": production.version if production else None,
        "models": models,
        "workers": [
            {"id": w.get("id"), "queues": w.get("queues"), "model_version": w.get("model_version")}
            for w in workers
        ],
    }
    status_code = 503 if reasons else 200
    if gateway.settings.env == "production" and not gateway.keys.knows(x_api_key):
        return JSONResponse({"status": body["status"]}, status_code=status_code)
    return JSONResponse(body, status_code=status_code)


def _models(gateway) -> list[dict]:
    models = []
    for name in gateway.catalogs.names():
        production = gateway.catalogs.get(name).production
        version = production.version if production else None
        models.append({"name": name, "version": version, "queue": gateway.queue_of(name)})
    return models


@router.get("/version", response_model=VersionPublic)
async def version(gateway: GatewayDep) -> JSONResponse:
    """The API version and the production model version."""
    production = gateway.catalog.production
    return JSONResponse(
        {
            "api_version": API_VERSION,
            "model_name": gateway.catalog.store.model_name,
            "model_version": production.version if production else None,
        }
    )

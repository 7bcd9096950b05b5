"""Liveness, readiness and versions."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import ApiKeyHeader, GatewayDep
from app.responses import JSONResponse
from app.schemas import VersionPublic
from app.services.workers import readiness
from core.versions import API_VERSION

router = APIRouter(tags=["system"])


@router.get("/health")
async def health() -> dict:
    """The gateway process is alive (no dependencies checked)."""
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "Not ready (reasons: see above)"}})
async def ready(gateway: GatewayDep, x_api_key: ApiKeyHeader = None) -> JSONResponse:
    """Ready when Redis answers, a worker consumes `predict` and a production model exists;
    `warnings` says when no worker consumes `train` (retrains would wait).

    In production only a caller with a valid API key (any scope) is told the reasons,
    warnings, model and workers; others get the status alone.
    """
    reasons, warnings, workers = await readiness(gateway)
    production = gateway.catalog.production
    body = {
        "status": "not ready" if reasons else "ready",
        "reasons": reasons,
        "warnings": warnings,
        "model_name": gateway.catalog.store.model_name,
        "model_version": production.version if production else None,
        "workers": [
            {"id": w.get("id"), "queues": w.get("queues"), "model_version": w.get("model_version")}
            for w in workers
        ],
    }
    status_code = 503 if reasons else 200
    if gateway.settings.env == "production" and not gateway.keys.knows(x_api_key):
        return JSONResponse({"status": body["status"]}, status_code=status_code)
    return JSONResponse(body, status_code=status_code)


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

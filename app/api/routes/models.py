"""Model versions: list, inspect, model card, promote, roll back."""

from __future__ import annotations

import functools

from fastapi import APIRouter, Path
from fastapi.responses import HTMLResponse

from app.api.deps import AdminScope, GatewayDep, PredictScope
from app.responses import JSONResponse
from app.schemas import ERROR_RESPONSES, ErrorPublic
from app.services.workers import consumers, live_workers, unserved

router = APIRouter(prefix="/models", tags=["models"])

Version = Path(ge=1, le=10**9, description="Model version number")
NOT_FOUND = {404: {"model": ErrorPublic, "description": "No such version"}}
CONFLICT = {409: {"model": ErrorPublic, "description": "Integrity check failed or no previous"}}


def _summary(meta) -> dict:
    return meta.model_dump(mode="json", exclude={"confusion_matrix"})


@router.get("", responses={**ERROR_RESPONSES})
async def list_models(gateway: GatewayDep, _: PredictScope) -> JSONResponse:
    """Every version with its metrics and gate decision, the production version, the workers
    and how many consume each queue (`warnings` names a queue nobody consumes)."""
    store = gateway.catalog.store
    metas = await gateway.catalog.call(store.all_metadata)
    aliases = await gateway.catalog.call(store.aliases)
    workers = await live_workers(gateway.redis, gateway.settings.worker.heartbeat_seconds)
    return JSONResponse(
        {
            "model_name": store.model_name,
            "production_version": aliases.production,
            "previous_versions": aliases.history,
            "versions": [
                {**_summary(m), "production": m.version == aliases.production} for m in metas
            ],
            "workers": [
                {
                    "id": w.get("id"),
                    "model_version": w.get("model_version"),
                    "queues": w.get("queues"),
                }
                for w in workers
            ],
            "consumers": consumers(workers),
            "warnings": unserved(workers),
        }
    )


@router.get("/{version}", responses={**NOT_FOUND, **ERROR_RESPONSES})
async def get_model(gateway: GatewayDep, _: PredictScope, version: int = Version) -> JSONResponse:
    """One version's full metadata."""
    meta = await gateway.catalog.call(gateway.catalog.store.metadata, version)
    production = gateway.catalog.production
    return JSONResponse(
        {
            **meta.model_dump(mode="json"),
            "production": production is not None and production.version == version,
        }
    )


def _as_json(responses: dict) -> dict:
    """Errors are JSON on the HTML route too; FastAPI would document them as text/html."""
    schema = {"$ref": "#/components/schemas/ErrorPublic"}
    return {
        code: {
            "description": spec["description"],
            "content": {"application/json": {"schema": schema}},
        }
        for code, spec in responses.items()
    }


@router.get(
    "/{version}/card",
    response_class=HTMLResponse,
    responses=_as_json({**NOT_FOUND, **ERROR_RESPONSES}),
)
async def get_card(gateway: GatewayDep, _: PredictScope, version: int = Version) -> HTMLResponse:
    """The model card: metadata, metrics, gate decision and confusion matrix, as HTML."""
    data = await gateway.catalog.call(gateway.catalog.store.read_file, version, "card.html")
    return HTMLResponse(data.decode())


@router.post("/{version}/promote", responses={**NOT_FOUND, **CONFLICT, **ERROR_RESPONSES})
async def promote(
    gateway: GatewayDep, principal: AdminScope, version: int = Version
) -> JSONResponse:
    """Serve this version; workers follow within seconds."""
    actor = f"api key {principal.fingerprint}"
    aliases = await gateway.catalog.call(
        functools.partial(gateway.catalog.store.promote, version, actor=actor)
    )
    return JSONResponse(aliases.model_dump())


@router.post("/rollback", responses={**CONFLICT, **ERROR_RESPONSES})
async def rollback(gateway: GatewayDep, principal: AdminScope) -> JSONResponse:
    """Go back to the previous production version."""
    actor = f"api key {principal.fingerprint}"
    aliases = await gateway.catalog.call(
        functools.partial(gateway.catalog.store.rollback, actor=actor)
    )
    return JSONResponse(aliases.model_dump())

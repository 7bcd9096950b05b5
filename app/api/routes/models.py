"""Models and their versions: list, inspect, model card, drift, promote, roll back.

Each route exists for a named model (``/models/{name}/...``) and, as before, for the default
model (``/models/{version}/...``): a model name never is a number, so the two never meet.
"""

from __future__ import annotations

import functools
from typing import Annotated

import redis.exceptions
from fastapi import APIRouter, Path
from fastapi.responses import HTMLResponse
from starlette.convertors import IntegerConvertor, register_url_convertor

from app.api.deps import AdminScope, GatewayDep, PredictScope
from app.responses import JSONResponse
from app.schemas import ERROR_RESPONSES, ErrorPublic
from app.services.catalog import ModelCatalog
from app.services.feedback import live_quality
from app.services.monitoring import card_section, latest, view, with_drift
from app.services.workers import QUEUES, consumers, live_workers, unserved
from app.state import Gateway
from core.settings import MODEL_NAME

router = APIRouter(prefix="/models", tags=["models"])


class VersionConvertor(IntegerConvertor):
    """A version in a path: at most 18 digits, so a path of 60,000 digits is not a version
    (Python refuses int() of over 4,300 digits), it is a model name, refused by its pattern."""

    regex = "[0-9]{1,18}"


register_url_convertor("version", VersionConvertor())

Version = Annotated[int, Path(ge=1, le=10**9, description="Model version number")]
Name = Annotated[str, Path(pattern=MODEL_NAME, description="A served model's name")]
NOT_FOUND = {404: {"model": ErrorPublic, "description": "No such model or version"}}
CONFLICT = {409: {"model": ErrorPublic, "description": "Integrity check failed or no previous"}}


def _summary(meta) -> dict:
    """A version in a list: its reference profile (hundreds of numbers) only in its own GET."""
    return meta.model_dump(mode="json", exclude={"confusion_matrix", "reference_profile"})


async def _versions(catalog: ModelCatalog) -> dict:
    """A model's versions with metrics and gate decisions, and its aliases."""
    store = catalog.store
    metas = await catalog.call(store.all_metadata)
    aliases = await catalog.call(store.aliases)
    return {
        "model_name": store.model_name,
        "production_version": aliases.production,
        "previous_versions": aliases.history,
        "versions": [{**_summary(m), "production": m.version == aliases.production} for m in metas],
    }


def _model_settings(gateway: Gateway, name: str) -> dict:
    model = gateway.settings.models.get(name)
    if model is None:  # found in the store (registered), not in the settings
        return {"queue": gateway.queue_of(name), "trainer": None, "retrain_cron": None}
    cron = model.schedule.retrain_cron if model.schedule.retrain_enabled else None
    return {
        "queue": gateway.queue_of(name),
        "trainer": model.trainer,
        "retrain_cron": cron,
        "metric": model.metric,
        "retrain_after_labels": model.feedback.retrain_after_labels or None,
    }


@router.get("", responses={**ERROR_RESPONSES})
async def list_models(gateway: GatewayDep, _: PredictScope) -> JSONResponse:
    """Every model with its production version (`models`); the default model's versions with
    their metrics and gate decisions; the workers and how many consume each queue
    (`warnings` names a queue nobody consumes)."""
    workers = await live_workers(gateway.redis, gateway.settings.worker.heartbeat_seconds)
    models = []
    for name in gateway.catalogs.names():
        production = gateway.catalogs.get(name).production
        models.append(
            {
                "name": name,
                "production_version": production.version if production else None,
                "default": name == gateway.catalogs.default_name,
                **_model_settings(gateway, name),
            }
        )
    queues = (*QUEUES, *sorted({m["queue"] for m in models} - set(QUEUES)))
    return JSONResponse(
        {
            **await _versions(gateway.catalog),
            "models": models,
            "workers": [
                {
                    "id": w.get("id"),
                    "model_version": w.get("model_version"),
                    "models": w.get("models"),
                    "queues": w.get("queues"),
                }
                for w in workers
            ],
            "consumers": consumers(workers, queues),
            "warnings": unserved(workers, queues),
        }
    )


# -- one version: metadata, card, promote; and rollback -------------------------------------------
async def _metadata(catalog: ModelCatalog, version: int) -> JSONResponse:
    meta = await catalog.call(catalog.store.metadata, version)
    production = catalog.production
    return JSONResponse(
        {
            **meta.model_dump(mode="json"),
            "production": production is not None and production.version == version,
        }
    )


async def _card(gateway: Gateway, catalog: ModelCatalog, version: int) -> HTMLResponse:
    """The card written at training time, with the version's latest drift check added."""
    data = await catalog.call(catalog.store.read_file, version, "card.html")
    try:
        section = card_section(version, await latest(gateway.redis, catalog.name))
    except redis.exceptions.RedisError as exc:  # the card itself is in the store: show it
        section = f"<h2>Drift (latest check)</h2><p>Unavailable: Redis {type(exc).__name__}.</p>"
    return HTMLResponse(with_drift(data.decode(), section))


async def _promote(catalog: ModelCatalog, version: int, principal) -> JSONResponse:
    actor = f"api key {principal.fingerprint}"
    aliases = await catalog.call(functools.partial(catalog.store.promote, version, actor=actor))
    return JSONResponse(aliases.model_dump())


async def _rollback(catalog: ModelCatalog, principal) -> JSONResponse:
    actor = f"api key {principal.fingerprint}"
    aliases = await catalog.call(functools.partial(catalog.store.rollback, actor=actor))
    return JSONResponse(aliases.model_dump())


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


# The default model's routes (as before: /models/{version}...).
@router.get("/{version:version}", responses={**NOT_FOUND, **ERROR_RESPONSES})
async def get_version(gateway: GatewayDep, _: PredictScope, version: Version) -> JSONResponse:
    """One version of the default model: its full metadata."""
    return await _metadata(gateway.catalog, version)


@router.get(
    "/{version:version}/card",
    response_class=HTMLResponse,
    responses=_as_json({**NOT_FOUND, **ERROR_RESPONSES}),
)
async def get_card(gateway: GatewayDep, _: PredictScope, version: Version) -> HTMLResponse:
    """The model card of a version of the default model, as HTML."""
    return await _card(gateway, gateway.catalog, version)


@router.post("/{version:version}/promote", responses={**NOT_FOUND, **CONFLICT, **ERROR_RESPONSES})
async def promote(gateway: GatewayDep, principal: AdminScope, version: Version) -> JSONResponse:
    """Serve this version of the default model; workers follow within seconds."""
    return await _promote(gateway.catalog, version, principal)


@router.post("/rollback", responses={**CONFLICT, **ERROR_RESPONSES})
async def rollback(gateway: GatewayDep, principal: AdminScope) -> JSONResponse:
    """Go back to the default model's previous production version."""
    return await _rollback(gateway.catalog, principal)


# A named model's routes: /models/{name}...
@router.get("/{name}", responses={**NOT_FOUND, **ERROR_RESPONSES})
async def get_model(gateway: GatewayDep, _: PredictScope, name: Name) -> JSONResponse:
    """One model: its versions with metrics, gate decisions and live quality (over the last
    labelled predictions: POST /models/{name}/feedback), production, queue, trainer."""
    catalog = gateway.catalogs.get(name)
    found = await _versions(catalog)
    quality = await live_quality(gateway.redis, catalog.name)
    for version in found["versions"]:
        version["live_quality"] = quality.get(version["version"])
    return JSONResponse({**found, **_model_settings(gateway, name)})


@router.get("/{name}/monitoring", responses={**NOT_FOUND, **ERROR_RESPONSES})
async def get_monitoring(gateway: GatewayDep, _: PredictScope, name: Name) -> JSONResponse:
    """Drift of the model `name`: the latest check of its production version's recent inputs
    against the data it was trained on (PSI and KS per feature, PSI of the predicted
    classes), the thresholds, and a `status`: `ok`, `drift`, `not_enough_data`, `no_profile`
    (a version trained before monitoring), `pending` (not checked yet), `not_monitored`,
    `no_production_model`."""
    catalog = gateway.catalogs.get(name)
    result = await latest(gateway.redis, name)
    return JSONResponse(view(gateway.settings, name, catalog.production, result))


@router.get("/{name}/{version:version}", responses={**NOT_FOUND, **ERROR_RESPONSES})
async def get_model_version(
    gateway: GatewayDep, _: PredictScope, name: Name, version: Version
) -> JSONResponse:
    """One version of the model `name`: its full metadata."""
    return await _metadata(gateway.catalogs.get(name), version)


@router.get(
    "/{name}/{version:version}/card",
    response_class=HTMLResponse,
    responses=_as_json({**NOT_FOUND, **ERROR_RESPONSES}),
)
async def get_model_card(
    gateway: GatewayDep, _: PredictScope, name: Name, version: Version
) -> HTMLResponse:
    """The model card of a version of the model `name`, as HTML."""
    return await _card(gateway, gateway.catalogs.get(name), version)


@router.post(
    "/{name}/{version:version}/promote", responses={**NOT_FOUND, **CONFLICT, **ERROR_RESPONSES}
)
async def promote_model(
    gateway: GatewayDep, principal: AdminScope, name: Name, version: Version
) -> JSONResponse:
    """Serve this version of the model `name`; workers follow within seconds."""
    return await _promote(gateway.catalogs.get(name), version, principal)


@router.post("/{name}/rollback", responses={**NOT_FOUND, **CONFLICT, **ERROR_RESPONSES})
async def rollback_model(gateway: GatewayDep, principal: AdminScope, name: Name) -> JSONResponse:
    """Go back to the previous production version of the model `name`."""
    return await _rollback(gateway.catalogs.get(name), principal)

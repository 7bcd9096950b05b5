"""The gateway application, ``app.main:app``, served by ``python -m app`` (app/server.py)."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.api.plain_route import GatewayApp
from app.api.routes import feedback, jobs, models, predict, retrain, system, v2
from app.docs import install_docs
from app.errors import install_error_handlers
from app.metrics import GatewayMetrics, RequestMetrics
from app.metrics import router as metrics_router
from app.state import Gateway
from core.heap import freeze_startup_heap
from core.logging import setup_logging
from core.redis import check_sentinels
from core.settings import get_settings
from core.store import check_storage
from core.tracing import tracer_for
from core.versions import API_VERSION


def telemetry(tracer) -> dict:
    """FastAPI's native OpenTelemetry: off, or the request spans only (tracing on).

    Its server span covers every route, the hand-written /predict included (it wraps the
    whole app), continues a client's ``traceparent`` and is the parent of the enqueue.
    Prometheus metrics (app/metrics.py) cover what its metrics and logs would; its
    per-request provider lookups cost ~5 % of a predict request, so they stay off.
    """
    if tracer is None:
        return {"tracing": False, "metrics": False, "logs": False}
    return {
        "tracing": True,
        "tracer_provider": tracer.provider,
        "metrics": False,
        "logs": False,
        "operation_spans": False,  # a span per dependency and endpoint call: noise here
        "exclude": _untraced,
    }


UNTRACED = frozenset({"/health", "/ready", "/metrics"})  # probes and scrapes: no traces


def _untraced(scope) -> bool:
    return scope.get("path") in UNTRACED


def create_app(settings=None) -> GatewayApp:
    settings = settings or get_settings()
    setup_logging(settings, "gateway")
    metrics = GatewayMetrics(models={settings.default_model, *settings.models})
    tracer = tracer_for(settings, "gateway", on_dropped=metrics.trace_spans_dropped.inc)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # A sentinel:// URL whose sentinels do not answer, or an unreachable model store,
        # stops the gateway here, naming it.
        await asyncio.to_thread(check_sentinels, settings.redis_url)
        await asyncio.to_thread(check_storage, settings)
        gateway = Gateway.from_settings(settings, metrics, tracer)
        app.state.gateway = gateway
        await gateway.start()
        freeze_startup_heap()
        try:
            yield
        finally:
            await gateway.stop()
            if tracer is not None:
                tracer.shutdown()  # sends what is queued, within one export timeout

    # Production hides the API's description unless gateway.docs is set.
    docs = bool(settings.gateway.docs)
    app = GatewayApp(
        title="Two MLOps Toolset",
        version=API_VERSION,
        summary="Async scikit-learn predictions through Redis and Celery workers.",
        telemetry=telemetry(tracer),
        lifespan=lifespan,
        openapi_url="/openapi.json" if docs else None,
        docs_url=None,  # app/docs.py serves them without a CDN
        redoc_url=None,
    )
    if docs:
        install_docs(app, "/openapi.json")
    app.state.metrics = metrics
    app.state.metrics_token = str(settings.gateway.metrics_token)
    install_error_handlers(app)
    for module in (predict, feedback, jobs, models, retrain, system, v2):
        app.include_router(module.router)
    app.include_router(metrics_router)
    # In front of the documented routes, and of the whole stack while tracing is off (with it
    # on, FastAPI's exception telemetry sees what fails in them).
    plain = (*predict.plain_routes, *feedback.plain_routes, *v2.plain_routes)
    app.router.routes[:0] = plain
    app.plain_routes = plain if tracer is None else ()
    app.add_middleware(RequestMetrics, metrics=metrics)  # added last: outermost
    return app


app = create_app()

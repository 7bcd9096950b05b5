"""The gateway application, ``app.main:app``, served by ``python -m app`` (app/server.py)."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.api.routes import jobs, models, predict, retrain, system
from app.errors import install_error_handlers
from app.metrics import GatewayMetrics, RequestMetrics
from app.metrics import router as metrics_router
from app.state import Gateway
from core.heap import freeze_startup_heap
from core.logging import setup_logging
from core.settings import get_settings
from core.store import check_storage
from core.versions import API_VERSION


def create_app(settings=None) -> FastAPI:
    settings = settings or get_settings()
    setup_logging(settings, "gateway")
    metrics = GatewayMetrics(models={settings.default_model, *settings.models})

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await asyncio.to_thread(check_storage, settings)  # an unreachable store: stop here
        gateway = Gateway.from_settings(settings, metrics)
        app.state.gateway = gateway
        await gateway.start()
        freeze_startup_heap()
        try:
            yield
        finally:
            await gateway.stop()

    # Production hides the API's description unless gateway.docs is set.
    docs = bool(settings.gateway.docs)
    app = FastAPI(
        title="Two MLOps Toolset",
        version=API_VERSION,
        summary="Async scikit-learn predictions through Redis and Celery workers.",
        # Prometheus metrics (app/metrics.py) cover what FastAPI's native OpenTelemetry would;
        # its per-request provider lookups cost ~5 % of a predict request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        lifespan=lifespan,
        openapi_url="/openapi.json" if docs else None,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
    )
    app.state.metrics = metrics
    app.state.metrics_token = str(settings.gateway.metrics_token)
    install_error_handlers(app)
    for module in (predict, jobs, models, retrain, system):
        app.include_router(module.router)
    app.include_router(metrics_router)
    app.router.routes[:0] = predict.plain_routes  # in front of the documented route
    app.add_middleware(RequestMetrics, metrics=metrics)  # added last: outermost
    return app


app = create_app()

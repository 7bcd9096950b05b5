"""``/docs`` (Swagger UI) and ``/redoc`` with their scripts and styles served by the gateway.

FastAPI's own pages load them from a CDN, so they are blank on a network without internet.
The files come from the ``fastapi-offline`` package's static folder; the pages are FastAPI's
``get_swagger_ui_html`` / ``get_redoc_html`` pointed at them.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.routing import Match, Mount

ASSETS = "/docs-assets"
STATIC = files("fastapi_offline") / "static"


class AssetsMount(Mount):
    """A mount that records itself in the scope, as FastAPI's routes do (for metrics)."""

    def matches(self, scope):
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self
        return match, child_scope


def install_docs(app: FastAPI, openapi_url: str) -> None:
    """Serve ``/docs``, ``/redoc`` and their assets under :data:`ASSETS`."""
    app.router.routes.append(
        AssetsMount(ASSETS, StaticFiles(directory=str(STATIC)), name="docs-assets")
    )

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS}/favicon.png",
            with_google_fonts=False,
        )

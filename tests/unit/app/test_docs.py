"""app/docs.py: /docs and /redoc load their scripts and styles from the gateway, not a CDN."""

from __future__ import annotations

import re

import httpx

from app.docs import ASSETS
from app.main import create_app
from tests.factories import run, settings_with


def fetch(app, *paths: str) -> list[httpx.Response]:
    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return [await client.get(path) for path in paths]

    return run(scenario())


def test_docs_pages_load_every_asset_from_the_gateway(monkeypatch):
    app = create_app(settings_with(monkeypatch, GATEWAY__DOCS="true"))
    docs, redoc = fetch(app, "/docs", "/redoc")
    assets = []
    for page in (docs, redoc):
        assert page.status_code == 200
        urls = re.findall(r"""(?:src|href)=["']?([^"'\s>]+)""", page.text)
        assert urls and all(url.startswith(ASSETS) for url in urls), urls
        assets += urls
    served = fetch(app, *assets)
    assert [r.status_code for r in served] == [200] * len(assets)
    assert all(len(r.content) > 1000 for r in served)  # the files, not an error page


def test_hidden_docs_hide_their_assets_too(monkeypatch):
    app = create_app(settings_with(monkeypatch, GATEWAY__DOCS="false"))
    answers = fetch(app, "/docs", "/redoc", "/openapi.json", f"{ASSETS}/swagger-ui.css")
    assert [r.status_code for r in answers] == [404] * 4

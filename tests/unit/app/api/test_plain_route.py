"""The fast lane of app/api/plain_route.py: a plain route's requests skip FastAPI's stack and
router, and get the same answers, metrics and error handling as through them."""

from __future__ import annotations

import httpx
import pytest
from fastapi import Request
from starlette.responses import JSONResponse, PlainTextResponse

from app.api.plain_route import GatewayApp, PlainRoute
from app.metrics import GatewayMetrics, RequestMetrics
from tests.factories import run, samples, value


class Refused(Exception):
    pass


async def _handler(request: Request):
    kind = request.path_params["kind"]
    if kind == "refused":
        raise Refused("no")
    if kind == "bug":
        raise RuntimeError("a bug")
    # The router records itself in the scope; the lane does not cross it.
    return JSONResponse({"kind": kind, "router": "router" in request.scope})


def _app(lane: bool) -> tuple[GatewayApp, GatewayMetrics]:
    app = GatewayApp()
    metrics = GatewayMetrics()
    route = PlainRoute("/things/{kind}", _handler, methods=["POST"])

    @app.post("/things/{kind}")
    async def documented(kind: str):  # the documented twin, never reached: the plain one is first
        return {"documented": kind}

    @app.get("/other")
    async def other(request: Request):
        return {"router": "router" in request.scope}

    async def refused(request, exc):
        return PlainTextResponse("refused", status_code=418)

    app.add_exception_handler(Refused, refused)
    app.router.routes[:0] = [route]
    app.plain_routes = (route,) if lane else ()
    app.add_middleware(RequestMetrics, metrics=metrics)
    return app, metrics


def _requests(app, *calls, raise_app_exceptions=False) -> list[httpx.Response]:
    async def scenario():
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return [await client.request(method, path) for method, path in calls]

    return run(scenario())


CALLS = [
    ("POST", "/things/a"),
    ("POST", "/things/refused"),
    ("POST", "/things/bug"),
    ("GET", "/things/a"),  # the path of a plain route with another method: the stack's 405
    ("GET", "/other"),
    ("GET", "/missing"),
]


@pytest.mark.parametrize("lane", [True, False], ids=["lane", "whole stack"])
def test_answers_and_metrics_are_those_of_the_whole_stack(lane):
    app, metrics = _app(lane)
    answers = _requests(app, *CALLS)
    assert [a.status_code for a in answers] == [200, 418, 500, 405, 200, 404]
    assert answers[0].json() == {"kind": "a", "router": not lane}
    assert answers[1].text == "refused"  # the app's own handler
    assert answers[2].text == "Internal Server Error"
    assert answers[4].json() == {"router": True}  # other routes take the whole stack
    found = samples(metrics.exposition())
    for status in ("200", "418", "500"):
        count = value(
            found, "mlops_http_requests_total", route="/things/{kind}", method="POST", status=status
        )
        assert count == 1, status
    assert value(found, "mlops_http_requests_total", route="/other", method="GET", status="200")


def test_an_exception_no_handler_takes_still_reaches_the_server():
    """As through Starlette's ServerErrorMiddleware: the client gets its 500, the server (which
    logs it) gets the exception."""
    app, _ = _app(lane=True)
    with pytest.raises(RuntimeError, match="a bug"):
        _requests(app, ("POST", "/things/bug"), raise_app_exceptions=True)

"""Serve the hottest routes without FastAPI's per-request machinery.

FastAPI 0.16x spends more CPU on a request than our whole predict handler does: the nested
router matching of ``include_router`` and ``solve_dependencies`` even for a route whose only
parameter is the ``Request`` (measured: 440 -> 280 µs of gateway CPU per predict request).
A :class:`PlainRoute` placed in front of the documented FastAPI route serves the requests
with a handler that reads its parameters by hand; the FastAPI route stays for the OpenAPI
schema (``/docs``, fuzzing), declaring the same parameters (app/api/routes/predict.py), and
the app's exception handlers apply to both.

:class:`GatewayApp` goes one step further: a request for a plain route does not cross
FastAPI's middleware stack and router at all. Its own short stack keeps what that one does for
such a route: the app's middleware (the request metrics), the 500 for an exception no handler
takes, and the app's exception handlers (the same objects); it leaves out the layers a plain
route has no use for (FastAPI's exception telemetry, the exit stack for dependencies with
``yield``, the router's walk over every route). Async submits at 16 connections to a gateway
alone (its worker stopped once ready), three interleaved rounds on the 2-core machine: 128 ->
120 µs of gateway CPU per request (medians), 7,300 -> 7,750 requests/s (2026-12-02).
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send


class PlainRoute(Route):
    """A Starlette route that records itself in the scope, as FastAPI's do (for metrics)."""

    def matches(self, scope):
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self
        return match, child_scope


class GatewayApp(FastAPI):
    """FastAPI whose :attr:`plain_routes` are served in front of its middleware stack.

    A request that one of them matches fully (path and method) would be served by that same
    route inside the stack too, as the plain routes come first in the router (app/main.py);
    every other request takes the whole stack."""

    plain_routes: tuple[PlainRoute, ...] = ()

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        if not self.plain_routes:
            return stack
        handlers = self.exception_handlers
        lane: ASGIApp = _HandledRoute(
            {k: v for k, v in handlers.items() if isinstance(k, type) and k is not Exception},
            {k: v for k, v in handlers.items() if isinstance(k, int) and k != 500},
        )
        error_handler = handlers.get(500) or handlers.get(Exception)
        outer = [
            Middleware(ServerErrorMiddleware, handler=error_handler, debug=self.debug),
            *self.user_middleware,
        ]
        for cls, args, kwargs in reversed(outer):
            lane = cls(lane, *args, **kwargs)
        return _FastLane(stack, self.plain_routes, lane)


class _FastLane:
    def __init__(self, stack: ASGIApp, routes: tuple[PlainRoute, ...], lane: ASGIApp):
        self.stack = stack
        self.routes = routes
        self.lane = lane
        self.methods = frozenset().union(*(route.methods or () for route in routes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in self.methods:  # GETs go on at once
            for route in self.routes:
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child_scope)
                    return await self.lane(scope, receive, send)
        await self.stack(scope, receive, send)


class _HandledRoute:
    """The matched route, its exceptions answered by the app's handlers (what Starlette's
    ExceptionMiddleware hands each route through the scope)."""

    def __init__(self, by_class: dict, by_status: dict):
        self.handlers = (by_class, by_status)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["starlette.exception_handlers"] = self.handlers
        await scope["route"].handle(scope, receive, send)

"""Serve the hottest route without FastAPI's per-request machinery.

FastAPI 0.16x spends more CPU on a request than our whole predict handler does: the nested
router matching of ``include_router`` and ``solve_dependencies`` even for a route whose only
parameter is the ``Request`` (measured: 440 -> 280 µs of gateway CPU per predict request).
A :class:`PlainRoute` placed in front of the documented FastAPI route serves the requests
with a handler that reads its parameters by hand; the FastAPI route stays for the OpenAPI
schema (``/docs``, fuzzing), declaring the same parameters (app/api/routes/predict.py), and
the app's exception handlers apply to both.
"""

from __future__ import annotations

from starlette.routing import Match, Route


class PlainRoute(Route):
    """A Starlette route that records itself in the scope, as FastAPI's do (for metrics)."""

    def matches(self, scope):
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self
        return match, child_scope

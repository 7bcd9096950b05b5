"""Tracing across the queue, off by default (settings' ``[tracing]``).

Off, :func:`tracer_for` returns None and nothing of OpenTelemetry is imported: every caller
keeps that None and tests it (one attribute, one comparison) before doing anything traced.
On, it returns a :class:`core.otel.Tracer`, whose spans leave in the background.

The W3C ``traceparent`` travels in the Celery message headers (Celery's own OpenTelemetry
instrumentation reads the same header), and in each predict job of a message: a message
groups the jobs of many requests, each its own trace's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from core.otel import Tracer
    from core.settings import Settings

TRACEPARENT = "traceparent"  # the message header and the job field


def tracer_for(
    settings: Settings,
    service: Literal["gateway", "worker"],
    on_dropped: Callable[[int], object] | None = None,
) -> Tracer | None:
    """This process's tracer, or None when tracing is off. ``on_dropped(n)``: n spans lost."""
    tracing = settings.tracing
    if not tracing.enabled:
        return None
    from core.otel import Tracer  # only now: the SDK costs imports and memory

    name = tracing.gateway_service if service == "gateway" else tracing.worker_service
    return Tracer.from_settings(tracing, name, on_dropped)

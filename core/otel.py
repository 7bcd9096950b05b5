"""The OpenTelemetry side of tracing, imported only when ``tracing.enabled`` (core/tracing.py).

One :class:`Tracer` per process: its own TracerProvider (never the global one, so a test or a
library cannot swap it), sampling parent-based with ``tracing.sampling_ratio`` for new traces,
spans batched by a BatchSpanProcessor and sent by its thread over OTLP/HTTP. A request never
waits on the exporter: a span ends into a bounded queue; an export that fails or times out
(``tracing.export_timeout_seconds``) drops its spans, and a full queue drops its oldest span
for each new one; both are counted (``on_dropped``, ``mlops_trace_spans_dropped_total``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager

from loguru import logger
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from core.settings import TracingSettings
from core.tracing import TRACEPARENT

PROPAGATOR = TraceContextTextMapPropagator()
MAX_QUEUE = 2048  # spans waiting for export; beyond it new spans are dropped (and counted)
MAX_BATCH = 512
KINDS = {
    "internal": SpanKind.INTERNAL,
    "server": SpanKind.SERVER,
    "producer": SpanKind.PRODUCER,
    "consumer": SpanKind.CONSUMER,
}  # callers name a kind without importing OpenTelemetry
MAX_LINKS = 64  # of a message's jobs' requests: a 256-job message links the first 64
WARN_EVERY_SECONDS = 60.0  # a failing exporter is logged at most this often


class CountingExporter(SpanExporter):
    """Export through ``inner``; count the spans of a failed export as dropped."""

    def __init__(self, inner: SpanExporter, on_dropped: Callable[[int], object] | None = None):
        self.inner = inner
        self.on_dropped = on_dropped
        self.dropped = 0
        self.exported = 0
        self._warned_at = float("-inf")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        error = None
        try:
            result = self.inner.export(spans)
        except Exception as exc:  # the exporter thread must live on; the spans are lost
            result, error = SpanExportResult.FAILURE, exc
        if result is SpanExportResult.SUCCESS:
            self.exported += len(spans)
            return result
        self.dropped_spans(len(spans))
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_SECONDS:
            self._warned_at = now
            logger.warning(
                "trace export failed, {} span(s) dropped ({} so far){}: is tracing.endpoint "
                "right and the collector up?",
                len(spans),
                self.dropped,
                f": {error!r}" if error else "",
            )
        return result

    def dropped_spans(self, count: int) -> None:
        self.dropped += count
        if self.on_dropped is not None:
            self.on_dropped(count)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class _QueueGuard(SpanProcessor):
    """Ahead of the BatchSpanProcessor: a sampled span that finds its queue full is counted.

    The SDK's queue drops such a span with one log line per process; this counts every one.
    """

    def __init__(self, batch: BatchSpanProcessor, exporter: CountingExporter):
        self.batch = batch
        self.exporter = exporter
        self._queue = _queue_of(batch)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.batch.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if self._queue is not None and len(self._queue) >= MAX_QUEUE:
            self.exporter.dropped_spans(1)
        self.batch.on_end(span)

    def shutdown(self) -> None:
        self.batch.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.batch.force_flush(timeout_millis)


def _queue_of(batch: BatchSpanProcessor):
    """The BatchSpanProcessor's queue (its attribute moved between SDK versions), or None."""
    inner = getattr(batch, "_batch_processor", batch)
    return getattr(inner, "_queue", None)


class Tracer:
    """Spans of one process (service), and the ``traceparent`` strings that carry them."""

    def __init__(
        self,
        provider: TracerProvider,
        exporter: CountingExporter | None = None,
    ):
        self.provider = provider
        self.exporter = exporter
        self.otel = provider.get_tracer("mlops")

    @classmethod
    def from_settings(
        cls,
        tracing: TracingSettings,
        service: str,
        on_dropped: Callable[[int], object] | None = None,
    ) -> Tracer:
        return cls.exporting(
            OTLPSpanExporter(
                endpoint=tracing.endpoint, timeout=float(tracing.export_timeout_seconds)
            ),
            service,
            sampling_ratio=float(tracing.sampling_ratio),
            every_ms=float(tracing.export_every_seconds) * 1000,
            timeout_ms=float(tracing.export_timeout_seconds) * 1000,
            on_dropped=on_dropped,
        )

    @classmethod
    def exporting(
        cls,
        exporter: SpanExporter,
        service: str,
        *,
        sampling_ratio: float = 1.0,
        every_ms: float = 1000,
        timeout_ms: float = 5000,
        on_dropped: Callable[[int], object] | None = None,
    ) -> Tracer:
        """A tracer whose spans go to ``exporter`` in the background (tests pass an in-memory
        one)."""
        counting = CountingExporter(exporter, on_dropped)
        provider = TracerProvider(
            sampler=ParentBased(TraceIdRatioBased(sampling_ratio)),
            resource=Resource.create({"service.name": service}),
        )
        batch = BatchSpanProcessor(
            counting,
            max_queue_size=MAX_QUEUE,
            schedule_delay_millis=every_ms,
            max_export_batch_size=MAX_BATCH,
            export_timeout_millis=timeout_ms,
        )
        provider.add_span_processor(_QueueGuard(batch, counting))
        _quiet_exporter_logs()
        return cls(provider, counting)

    # -- spans ---------------------------------------------------------------------------
    def span(
        self,
        name: str,
        *,
        kind: str = "internal",
        parent: str | None = None,
        links: Iterable[str | None] = (),
        attributes: dict | None = None,
    ) -> AbstractContextManager[trace.Span]:
        """A span made current for a ``with`` block: a child of the current span, or of
        ``parent`` (a traceparent) when given, linked to the spans ``links`` name."""
        return self.otel.start_as_current_span(
            name,
            context=context_of(parent) if parent else None,
            kind=KINDS[kind],
            links=_links(links),
            attributes=attributes,
        )

    @staticmethod
    def event(name: str, attributes: dict | None = None) -> None:
        """An event of the current span, now."""
        trace.get_current_span().add_event(name, attributes)

    @staticmethod
    def traceparent() -> str | None:
        """The W3C traceparent of the current span, or None outside any span."""
        context = trace.get_current_span().get_span_context()
        if not context.is_valid:
            return None
        flags = int(context.trace_flags)
        return f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}"

    def shutdown(self) -> None:
        """Send what is queued (at most one export timeout), then stop the exporter thread."""
        self.provider.shutdown()


def context_of(traceparent: str) -> Context:
    return PROPAGATOR.extract({TRACEPARENT: traceparent})


def _links(traceparents: Iterable[str | None]) -> list[Link]:
    links = []
    for value in traceparents:
        if not value:
            continue
        context = trace.get_current_span(context_of(value)).get_span_context()
        if context.is_valid:
            links.append(Link(context))
            if len(links) == MAX_LINKS:
                break
    return links


def _quiet_exporter_logs() -> None:
    """A dead endpoint makes the OTLP exporter log every failed export (with a traceback);
    :class:`CountingExporter` counts them and logs one line a minute instead."""
    for name in (
        "opentelemetry.exporter.otlp.proto.http.trace_exporter",
        "opentelemetry.sdk.trace.export",
        "opentelemetry.sdk._shared_internal",
    ):
        logging.getLogger(name).setLevel(logging.CRITICAL)

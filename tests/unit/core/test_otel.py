"""core/otel.py: traceparents, parents and links, sampling, and spans lost being counted."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from core import otel
from core.otel import CountingExporter, Tracer, _queue_of, _QueueGuard
from tests.factories import finished, memory_tracer

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_a_span_continues_the_traceparent_it_is_given_and_links_the_others():
    tracer, exporter = memory_tracer()
    other = "00-11111111111111111111111111111111-2222222222222222-01"
    with tracer.span("child", kind="consumer", parent=TRACEPARENT, links=[other, None, ""]):
        inside = tracer.traceparent()
    span = finished(tracer, exporter)["child"]
    assert span.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert span.parent.span_id == 0xB7AD6B7169203331
    assert [link.context.trace_id for link in span.links] == [int(other.split("-")[1], 16)]
    assert span.kind.name == "CONSUMER"
    assert span.resource.attributes["service.name"] == "test"
    # the traceparent written inside the span names it: what the next hop continues
    flags = int(span.context.trace_flags)
    assert flags & 1  # sampled
    assert inside == f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-{flags:02x}"


def test_nested_spans_are_children_and_no_span_means_no_traceparent():
    tracer, exporter = memory_tracer()
    assert tracer.traceparent() is None
    with tracer.span("outer"), tracer.span("inner"):
        pass
    spans = finished(tracer, exporter)
    assert spans["inner"].parent.span_id == spans["outer"].context.span_id
    assert spans["outer"].parent is None


def test_links_are_capped():
    tracer, exporter = memory_tracer()
    many = [f"00-{i + 1:032x}-{i + 1:016x}-01" for i in range(otel.MAX_LINKS + 10)]
    with tracer.span("message", links=many):
        pass
    assert len(finished(tracer, exporter)["message"].links) == otel.MAX_LINKS


def test_sampling_ratio_zero_keeps_no_new_trace_but_follows_a_sampled_parent():
    tracer, exporter = memory_tracer(sampling_ratio=0.0)
    with tracer.span("new root"):
        unsampled = tracer.traceparent()
    with tracer.span("job of a sampled request", parent=TRACEPARENT):
        pass
    assert unsampled is not None and not int(unsampled[-2:], 16) & 1  # propagated, unsampled
    assert list(finished(tracer, exporter)) == ["job of a sampled request"]


class Failing(InMemorySpanExporter):
    def __init__(self, how):
        super().__init__()
        self.how = how

    def export(self, spans):
        if self.how == "raise":
            raise ConnectionError("collector down")
        return SpanExportResult.FAILURE


@pytest.mark.parametrize("how", ["raise", "failure"])
def test_a_failed_export_drops_its_spans_and_counts_them(how):
    dropped = []
    tracer = Tracer.exporting(Failing(how), "test", on_dropped=dropped.append)
    for name in ("a", "b", "c"):
        with tracer.span(name):
            pass
    tracer.provider.force_flush(5000)
    assert sum(dropped) == 3
    assert tracer.exporter.dropped == 3 and tracer.exporter.exported == 0


def test_a_successful_export_counts_nothing_dropped():
    dropped = []
    counting = CountingExporter(InMemorySpanExporter(), dropped.append)
    assert counting.export([SimpleNamespace()]) is SpanExportResult.SUCCESS
    assert dropped == [] and counting.exported == 1


def test_a_span_that_finds_the_queue_full_is_counted():
    ended = []
    batch = SimpleNamespace(_queue=[None] * otel.MAX_QUEUE, on_end=ended.append)
    dropped = []
    guard = _QueueGuard(batch, CountingExporter(InMemorySpanExporter(), dropped.append))
    guard.on_end("span")
    batch._queue.pop()
    guard.on_end("span")
    assert dropped == [1]
    assert ended == ["span", "span"]  # the SDK's processor still sees (and drops) it


def test_the_installed_sdk_still_has_the_queue_the_guard_reads():
    batch = BatchSpanProcessor(InMemorySpanExporter())
    try:
        assert _queue_of(batch) is not None
    finally:
        batch.shutdown()

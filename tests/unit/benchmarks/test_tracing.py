"""benchmarks/tracing.py: the local OTLP receiver counts what it was sent, by service."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from benchmarks.tracing import OtlpSink


def exported_body(service: str, count: int) -> bytes:
    """One OTLP/HTTP export body of ``count`` spans, encoded as the SDK's exporter does."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test")
    for i in range(count):
        with tracer.start_as_current_span(f"span {i}"):
            pass
    provider.shutdown()
    return encode_spans(memory.get_finished_spans()).SerializeToString()


def test_the_receiver_counts_the_spans_of_each_service():
    sink = OtlpSink()  # not serving: the bodies are given as the handler keeps them
    try:
        sink.bodies += [exported_body("gateway", 3), exported_body("worker", 2)]
        sink.bodies.append(exported_body("gateway", 1))
        assert sink.spans() == {"gateway": 4, "worker": 2}
    finally:
        sink.server.server_close()

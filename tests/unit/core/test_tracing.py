"""core/tracing.py: off by default, nothing of the SDK imported; on, a tracer per service."""

from __future__ import annotations

from core.settings import get_settings
from core.tracing import tracer_for
from tests.factories import fresh_interpreter, settings_with


def test_tracing_is_off_by_default_and_gives_no_tracer():
    settings = get_settings()
    assert settings.tracing.enabled is False
    assert tracer_for(settings, "gateway") is None
    assert tracer_for(settings, "worker") is None


def test_off_the_gateway_and_workers_import_no_tracing_sdk():
    """FastAPI imports the OpenTelemetry API itself, and redis-py 8 the metrics SDK when it is
    installed (unused unless its observability is initialised); the trace SDK, the exporter
    and core/otel.py stay out."""
    code = (
        "import sys, app.main, workers.celery_app, workers.runtime, workers.batches; "
        "sys.stdout.write(repr(sorted(m for m in sys.modules "
        "if m.startswith(('opentelemetry.sdk.trace', 'opentelemetry.exporter', 'core.otel')))))"
    )
    out = fresh_interpreter(code)
    assert out == "[]", out


def test_on_each_service_gets_its_name(monkeypatch):
    settings = settings_with(
        monkeypatch, TRACING__ENABLED="true", TRACING__WORKER_SERVICE="my-workers"
    )
    for service, name in (("gateway", "mlops-gateway"), ("worker", "my-workers")):
        tracer = tracer_for(settings, service)
        try:
            assert tracer.provider.resource.attributes["service.name"] == name
        finally:
            tracer.shutdown()

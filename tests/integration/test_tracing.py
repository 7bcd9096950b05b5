"""Traces across the queue with real processes: the gateway's and the worker's real OTLP/HTTP
exporters send to a collector in this process; one trace id spans both for a sync predict and
for a retrain. A wrong endpoint neither fails nor slows a request; its spans are counted."""

from __future__ import annotations

import socket
import time

import pytest

from scripts.processes import free_port, wait_until
from tests.factories import total
from tests.integration.collector import Collector
from tests.integration.stack import SEED_BODY, Stack, poll_job, running

pytestmark = pytest.mark.integration

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def tracing_env(endpoint: str) -> dict[str, str]:
    return {
        "MLOPS_TRACING__ENABLED": "true",
        "MLOPS_TRACING__ENDPOINT": endpoint,
        "MLOPS_TRACING__EXPORT_EVERY_SECONDS": "0.2",
        "MLOPS_TRACING__EXPORT_TIMEOUT_SECONDS": "2",
    }


@pytest.fixture(scope="module")
def collector():
    started = Collector().start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def traced(tmp_path_factory, collector):
    with running(Stack(tmp_path_factory.mktemp("traced"), **tracing_env(collector.endpoint))) as s:
        yield s


def traceparent(trace_id: str, span_id: str = "00f067aa0ba902b7") -> dict[str, str]:
    return {"traceparent": f"00-{trace_id}-{span_id}-01"}


def wait_for_trace(collector: Collector, trace_id: str, names: set[str]) -> dict[str, dict]:
    wait_until(lambda: names <= set(collector.trace(trace_id)), 20, f"spans {sorted(names)}")
    return collector.trace(trace_id)


def test_a_sync_predict_is_one_trace_across_gateway_and_worker(traced, collector):
    with traced.client() as client:
        answer = client.post("/predict?wait=10", json=SEED_BODY, headers=traceparent(TRACE_ID))
    assert answer.status_code == 200, answer.text
    spans = wait_for_trace(
        collector,
        TRACE_ID,
        {
            "POST /predict",
            "publish predict",
            "process predict",
            "predict",
            "publish mlops:results",
        },
    )
    request, enqueue = spans["POST /predict"], spans["publish predict"]
    message, predict, results = (
        spans["process predict"],
        spans["predict"],
        spans["publish mlops:results"],
    )
    assert request["service"] == enqueue["service"] == "mlops-gateway"
    assert "result delivered" in request["events"]  # the worker's result reached the request
    assert {message["service"], predict["service"], results["service"]} == {"mlops-worker"}
    assert request["parent"] == "00f067aa0ba902b7"  # the client's traceparent, continued
    assert enqueue["parent"] == request["span_id"]
    assert message["parent"] == enqueue["span_id"]  # the Celery message's traceparent header
    assert predict["parent"] == results["parent"] == message["span_id"]
    assert (TRACE_ID, request["span_id"]) in predict["links"]  # the job's own request
    # probes and scrapes (the stack's start polled /health and /ready) make no traces
    assert not [s for s in collector.spans if s["name"].startswith(("GET /health", "GET /ready"))]


def test_a_retrain_is_one_trace_from_the_request_to_the_worker(traced, collector):
    trace_id = "5bf92f3577b34da6a3ce929d0e0e4737"
    with traced.admin() as admin:
        answer = admin.post("/retrain", headers=traceparent(trace_id))
        assert answer.status_code == 202, answer.text
        assert poll_job(admin, answer.json()["job_id"], timeout=60)["status"] == "SUCCESS"
    spans = wait_for_trace(collector, trace_id, {"POST /retrain", "publish train", "retrain"})
    request, enqueue, run = spans["POST /retrain"], spans["publish train"], spans["retrain"]
    assert request["service"] == enqueue["service"] == "mlops-gateway"
    assert run["service"] == "mlops-worker"
    assert enqueue["parent"] == request["span_id"]
    assert run["parent"] == enqueue["span_id"]


class Silent:
    """An endpoint that accepts connections and never answers: every export times out."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1/traces"


@pytest.mark.serial
@pytest.mark.parametrize("endpoint", ["closed port", "never answers"])
def test_a_wrong_endpoint_neither_fails_nor_slows_requests(tmp_path, endpoint):
    silent = Silent() if endpoint == "never answers" else None
    url = silent.endpoint if silent else f"http://127.0.0.1:{free_port()}/v1/traces"
    try:
        with running(Stack(tmp_path, **tracing_env(url))) as stack, stack.client() as client:
            slowest = 0.0
            for _ in range(40):
                started = time.perf_counter()
                answer = client.post("/predict?wait=10", json=SEED_BODY)
                slowest = max(slowest, time.perf_counter() - started)
                assert answer.status_code == 200, answer.text
            # An export waits up to 2 s (the timeout): a request that waited on one would show it.
            assert slowest < 1.0, slowest
            wait_until(
                lambda: total(stack.metrics(), "mlops_trace_spans_dropped_total") > 0,
                20,
                "dropped spans counted",
            )
            assert "trace export failed" in stack.services["gateway"].output()
    finally:
        if silent:
            silent.sock.close()

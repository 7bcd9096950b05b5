"""The cost of tracing: sync POST /predict under wrk with tracing off, on (every trace kept,
sent to a collector that accepts them) and on with a dead endpoint (every span dropped).

``python -m benchmarks.tracing [--seconds 10] [--connections 16] [--rounds 2]``: one stack
(redis-server, a worker as shipped, the gateway) per configuration, the configurations
alternated ``rounds`` times against the machine's drift. The collector here only reads,
keeps and acknowledges (decoding, to count the spans, waits until the load is over), so it
costs the gateway what a real one would, not the machine. `make bench` measures off and on
once, beside its other figures (benchmarks/costs.py); this script alternates them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from benchmarks.cpu import process_seconds
from core.signing import SigningKeys
from scripts.load import generator_name, run_load
from scripts.processes import free_port, process_tree


def span_cost(requests: int = 20000, sampling_ratio: float = 1.0) -> dict:
    """CPU per traced request, in process: the spans and traceparents of one sync predict on
    the gateway (request and publish spans, the delivery event) and of one 1-job message on
    the worker (process, predict, publish), through the real BatchSpanProcessor into an
    exporter that accepts everything. What tracing adds, without the machine's noise."""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from core.otel import Tracer

    class Accepting(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS

    tracer = Tracer.exporting(Accepting(), "bench", every_ms=200, sampling_ratio=sampling_ratio)
    started = time.perf_counter()
    for _ in range(requests):
        with tracer.span("POST /predict", kind="server"):
            job = tracer.traceparent()
            with tracer.span("publish predict", kind="producer", parent=job, links=()):
                header = tracer.traceparent()
            tracer.event("result delivered", {"mlops.job_id": "j"})
    gateway = (time.perf_counter() - started) / requests
    started = time.perf_counter()
    for _ in range(requests):
        with tracer.span("process predict", kind="consumer", parent=header):
            with tracer.span("predict", links=[job]):
                pass
            with tracer.span("publish mlops:results", kind="producer"):
                pass
    worker = (time.perf_counter() - started) / requests
    dropped = tracer.exporter.dropped
    tracer.shutdown()
    return {
        "requests": requests,
        "sampling_ratio": sampling_ratio,
        "gateway_us": round(gateway * 1e6, 1),
        "worker_us": round(worker * 1e6, 1),
        "dropped": dropped,
    }


def describe(cost: dict) -> str:
    return (
        f"span cost, {cost['requests']} requests, sampling {cost['sampling_ratio']:g}: "
        f"gateway {cost['gateway_us']:.1f} µs per sync predict (2 spans, 1 event), "
        f"worker {cost['worker_us']:.1f} µs per 1-job message (3 spans); "
        f"{cost['dropped']} spans dropped"
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its descendants (a worker's pool children too): what a
    request costs, whatever else the machine runs."""
    return sum(process_seconds(process_tree(pid)).values())


class OtlpSink:
    """An OTLP/HTTP receiver on a free loopback port that answers 200 to every export and
    keeps the bodies; :meth:`spans` decodes them (after the load, not during it)."""

    def __init__(self) -> None:
        bodies: list[bytes] = []

        class Accept(BaseHTTPRequestHandler):
            def do_POST(self):
                bodies.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.bodies = bodies
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Accept)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"

    def start(self) -> OtlpSink:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def spans(self) -> dict[str, int]:
        """Spans received by ``service.name``, from the protobuf bodies (OTLP/HTTP's default
        encoding)."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        counts: dict[str, int] = {}
        for body in self.bodies:
            for resource in ExportTraceServiceRequest.FromString(body).resource_spans:
                service = next(
                    (a.value.string_value for a in resource.resource.attributes
                     if a.key == "service.name"),
                    "?",
                )  # fmt: skip
                spans = sum(len(scope.spans) for scope in resource.scope_spans)
                counts[service] = counts.get(service, 0) + spans
        return counts


def _env(endpoint: str | None) -> dict[str, str]:
    if endpoint is None:
        return {}
    return {"MLOPS_TRACING__ENABLED": "true", "MLOPS_TRACING__ENDPOINT": endpoint}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--spans-only", action="store_true", help="only the in-process cost")
    args = parser.parse_args()
    # here, not at the top: `make bench` imports this module and needs none of the tests' stack
    from tests.integration.stack import PREDICT_KEY, SEED_BODY, Stack, running

    print(describe(span_cost()))
    print(describe(span_cost(sampling_ratio=0.0)))
    if args.spans_only:
        return
    keys = SigningKeys.generate()  # this run's; the stacks' services read them from here
    os.environ["MLOPS_SIGNING__PRIVATE_KEY"] = keys.private_text()
    os.environ["MLOPS_SIGNING__PUBLIC_KEYS"] = json.dumps([keys.public_text()])
    collector = OtlpSink().start()
    configurations = {
        "off": None,
        "on": collector.url,
        "on, dead endpoint": f"http://127.0.0.1:{free_port()}/v1/traces",
    }
    body = json.dumps(SEED_BODY).encode()
    headers = {"Content-Type": "application/json", "X-API-Key": PREDICT_KEY}
    runs: dict[str, list[dict]] = {name: [] for name in configurations}
    for _ in range(args.rounds):
        for name, endpoint in configurations.items():
            with tempfile.TemporaryDirectory() as workdir:
                stack = Stack(Path(workdir), **_env(endpoint))
                with running(stack):
                    url = f"{stack.url}/predict?wait=5"
                    run_load(url, body, headers, args.connections, 2)  # warm-up
                    pids = {n: stack.services[n].pid for n in ("gateway", "worker0")}
                    before = {n: cpu_seconds(pid) for n, pid in pids.items()}
                    result = run_load(url, body, headers, args.connections, args.seconds)
                    for n, pid in pids.items():
                        result[n] = (cpu_seconds(pid) - before[n]) / result["requests"] * 1e6
                    print(name, json.dumps(result), flush=True)
                    runs[name].append(result)
    collector.stop()
    lines = [
        f"sync POST /predict, {args.connections} connections, {args.seconds:g} s x "
        f"{args.rounds} rounds ({generator_name()})",
        "| tracing | req/s (median) | p50 ms | p99 ms | errors | req/s per round "
        "| gateway CPU µs/request | worker CPU µs/request |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, results in runs.items():
        per_round = ", ".join(f"{r['rps']:.0f}" for r in results)
        lines.append(
            f"| {name} | {statistics.median(r['rps'] for r in results):.0f} "
            f"| {statistics.median(r['p50_ms'] for r in results):.2f} "
            f"| {statistics.median(r['p99_ms'] for r in results):.2f} "
            f"| {sum(r['errors'] for r in results)} "
            f"| {per_round} "
            f"| {statistics.median(r['gateway'] for r in results):.0f} "
            f"| {statistics.median(r['worker0'] for r in results):.0f} |"
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""The cost of tracing: sync POST /predict under wrk with tracing off, on (every trace kept,
sent to a collector that accepts them) and on with a dead endpoint (every span dropped).

``python -m benchmarks.tracing [--seconds 10] [--connections 16] [--rounds 2]``: one stack
(redis-server, a worker as shipped, the gateway) per configuration, the configurations
alternated ``rounds`` times against the machine's drift. The collector here only reads and
acknowledges (no decoding), so it costs the gateway what a real one would, not the machine.
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

from core.signing import SigningKeys
from scripts.load import generator_name, run_load
from scripts.processes import free_port, process_tree
from tests.integration.stack import PREDICT_KEY, SEED_BODY, Stack, running


def span_cost(requests: int = 20000, sampling_ratio: float = 1.0) -> str:
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
    return (
        f"span cost, {requests} requests, sampling {sampling_ratio:g}: "
        f"gateway {gateway * 1e6:.1f} µs per sync predict (2 spans, 1 event), "
        f"worker {worker * 1e6:.1f} µs per 1-job message (3 spans); "
        f"{dropped} spans dropped"
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its descendants (a worker's pool children too): what a
    request costs, whatever else the machine runs."""
    total = 0.0
    for each in process_tree(pid):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


class _Accept(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


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
    print(span_cost())
    print(span_cost(sampling_ratio=0.0))
    if args.spans_only:
        return
    keys = SigningKeys.generate()  # this run's; the stacks' services read them from here
    os.environ["MLOPS_SIGNING__PRIVATE_KEY"] = keys.private_text()
    os.environ["MLOPS_SIGNING__PUBLIC_KEYS"] = json.dumps([keys.public_text()])
    collector = ThreadingHTTPServer(("127.0.0.1", 0), _Accept)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    configurations = {
        "off": None,
        "on": f"http://127.0.0.1:{collector.server_address[1]}/v1/traces",
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
    collector.shutdown()
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

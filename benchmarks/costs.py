"""`make bench`'s cost of two opt-in features, each against the same load without it:

- **tracing** (README "Tracing"): sync ``POST /predict`` with tracing off (the stack as
  shipped) and on (sampling 1.0, every span exported over OTLP/HTTP to a local receiver that
  accepts them), plus the in-process span cost (benchmarks/tracing.py) that the machine's
  noise does not move.
- **waiting for a replica** (``api.replica_ack_ms``, README "Redis high availability"):
  sync and async ``POST /predict`` with a real replica (a second redis-server with
  ``--replicaof``) attached to the benchmark's Redis, first without the setting, then with
  it: the ratio is the cost of ``WAIT``, the replica's own cost being in both.

Each point's CPU per request, by part, comes from /proc (benchmarks/cpu.py): on a busy
machine it moves less than requests/s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.cpu import tree
from benchmarks.tracing import OtlpSink, span_cost
from scripts.processes import RedisServer, wait_until

if TYPE_CHECKING:
    from benchmarks.run import Bench
    from scripts.processes import Process

REPLICA_ACK_MS = 500  # the README's example; WAIT returns as soon as the replica has the jobs
SPAN_COST_REQUESTS = 5000


def counter(metrics_url: str, name: str) -> float:
    """A counter's value (summed over its labels) from a Prometheus /metrics page."""
    text = httpx.get(metrics_url, timeout=10).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    )


class Costs:
    def __init__(self, bench: Bench, body: bytes, concurrency: int):
        self.bench = bench
        self.body = body
        self.concurrency = concurrency

    def sync(self, base: str, parts: dict, label: str) -> dict:
        point = self.bench.point(f"{base}/predict?wait=10", self.body, parts)
        self.bench.log_point(f"sync, {label}", point)
        return point

    def asynchronous(self, base: str, parts: dict, label: str) -> dict:
        point = self.bench.point(f"{base}/predict", self.body, parts)
        self.bench.log_point(f"async, {label}", point)
        return point

    def tracing(self, gateway: Process, base: str, worker: Process) -> dict:
        """Off on the stack as shipped, then on with a worker and a gateway that export every
        span to a local receiver. Stops ``gateway`` and ``worker``."""
        bench = self.bench
        off = self.sync(base, bench.parts([gateway], worker), "tracing off")
        bench.stop(gateway)
        bench.stop(worker)
        sink = OtlpSink().start()
        env = {
            "MLOPS_TRACING__ENABLED": "true",
            "MLOPS_TRACING__ENDPOINT": sink.url,
            "MLOPS_TRACING__SAMPLING_RATIO": "1.0",
        }
        try:
            worker, metrics_port = bench.worker("worker-traced", self.concurrency, **env)
            gateway, base = bench.gateway("gateway-traced", **env)
            on = self.sync(base, bench.parts([gateway], worker), "tracing on")
            dropped = "mlops_trace_spans_dropped_total"
            on["spans_dropped"] = counter(f"{base}/metrics", dropped) + counter(
                f"http://127.0.0.1:{metrics_port}/metrics", dropped
            )
            bench.stop(gateway)  # both send what they still hold before they exit
            bench.stop(worker)
            on["spans_received"] = sink.spans()
            on["exports"] = len(sink.bodies)
        finally:
            sink.stop()
        bench.log(
            f"  tracing on: spans received {on['spans_received']} in {on['exports']} exports, "
            f"{on['spans_dropped']:.0f} dropped"
        )
        spans = span_cost(SPAN_COST_REQUESTS)
        bench.log(
            f"  span cost in process: gateway {spans['gateway_us']:.0f} µs per sync predict, "
            f"worker {spans['worker_us']:.0f} µs per 1-job message"
        )
        return {"off": off, "on": on, "span_cost": spans}

    def replica_ack(self) -> dict:
        """Sync and async with a replica attached, without then with ``api.replica_ack_ms``,
        on a worker as shipped and a gateway started for each."""
        bench = self.bench
        replica = RedisServer(
            bench.work / "replica", extra=["--replicaof", "127.0.0.1", str(bench.redis.port)]
        ).start()
        worker, _ = bench.worker("worker-replica", self.concurrency)
        try:
            wait_until(
                lambda: replica.client().info("replication")["master_link_status"] == "up",
                120,
                "the replica's first sync",
            )
            points = {}
            for ack in (0, REPLICA_ACK_MS):
                gateway, base = bench.gateway(
                    f"gateway-replica-ack-{ack}", MLOPS_API__REPLICA_ACK_MS=str(ack)
                )
                parts = bench.parts([gateway], worker)
                parts["redis replica"] = tree(replica.process.pid)
                label = f"replica, replica_ack_ms = {ack}"
                points[f"sync_ack_{ack}"] = self.sync(base, parts, label)
                points[f"async_ack_{ack}"] = self.asynchronous(base, parts, label)
                bench.stop(gateway)
            bench.stop(worker)
        finally:
            replica.stop()
        return {"replica_ack_ms": REPLICA_ACK_MS, **points}

"""`make bench-scaling` (``python -m benchmarks.run --scaling``): throughput, latency and the
CPU of each part with 1, 2 and 4 worker pool processes and 1 and 2 gateway processes.

Workers scale by pool processes of one node (``--concurrency``, ``worker.concurrency``): a
pool process is what does the predicting, one core each when busy, and what a deployment
multiplies (compose's ``--scale worker=N`` and Kubernetes' replicas each add
``worker.concurrency`` of them). A node's main process (consuming, heartbeats) is measured
apart, so its share is visible: more nodes of fewer processes pay it more often. Gateways
scale by processes on their own ports, the load spread evenly over them: the gateway has no
``--workers`` option (app/server.py runs one uvicorn server per process), and behind a load
balancer each replica is such a process. Writes benchmarks/results/scaling.json and .md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks import sizing

if TYPE_CHECKING:
    from benchmarks.run import Bench

POOLS = (1, 2, 4)
GATEWAYS = (1, 2)
PATHS = {"sync": "/predict?wait=10", "async": "/predict"}


def measure(bench: Bench, body: bytes, connections: int) -> dict:
    bench.prepare(("iris",))
    bench.log(f"scaling: {connections} connections, {bench.seconds}s per point")
    points = []
    for pool in POOLS:
        worker, _ = bench.worker(f"worker-{pool}", pool, "predict")
        gateways, bases = [], []
        for count in GATEWAYS:
            while len(gateways) < count:
                gateway, base = bench.gateway(f"gateway-{pool}-{len(gateways) + 1}")
                gateways.append(gateway)
                bases.append(base)
            parts = bench.parts(list(gateways), worker)
            for mode, path in PATHS.items():
                point = bench.point([b + path for b in bases], body, parts, connections)
                point.update(mode=mode, pool_processes=pool, gateway_processes=count)
                bench.log_point(f"{mode}, {pool} pool x {count} gateway", point)
                points.append(point)
        for gateway in gateways:
            bench.stop(gateway)
        bench.stop(worker)
    return {
        "points": points,
        "connections": connections,
        "seconds_per_point": bench.seconds,
        "sizing": sizing.sizing(points),
    }


def write_reports(results: dict, folder: Path) -> None:
    (folder / "scaling.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    (folder / "scaling.md").write_text(sizing.markdown(results))

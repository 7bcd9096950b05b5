"""What the prediction log costs: `make bench`'s sync and batch figures with logging off and on.

``python -m benchmarks.prediction_log [--rounds 3] [--seconds 6]`` starts its own redis-server,
trains iris, then runs, ``rounds`` times in turn, a worker and a gateway (as `make bench` does)
with ``prediction_log.enabled`` false, then true (sample_ratio 1), each measured with the
bench's closed-loop load: sync single-row requests at 16 connections and sync batches of 1,000
rows at 4. Alternating the two settings spreads the shared machine's noise over both; the
median of each is reported, and their ratio (the issue allows 5 %).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

import httpx

from benchmarks.report import MAIN_LEVEL
from benchmarks.run import HEADERS, KEY, SINGLE, Bench, batch_body
from core.signing import SigningKeys
from scripts import commands
from scripts.load import generator_name, run_load
from scripts.processes import ROOT, child_env, free_port, wait_until


def measure(bench: Bench, logging_on: bool, seconds: float) -> dict:
    flag = "true" if logging_on else "false"
    worker = bench.start(
        "worker", commands.worker(concurrency=2), MLOPS_PREDICTION_LOG__ENABLED=flag
    )
    port = free_port()
    gateway = bench.start("gateway", commands.gateway("127.0.0.1", port))
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(f"{base}/ready", timeout=2).status_code == 200, 60, "ready")
    single = json.dumps(SINGLE).encode()
    run_load(f"{base}/predict?wait=10", single, HEADERS, MAIN_LEVEL, 2)  # warm-up
    sync = run_load(f"{base}/predict?wait=10", single, HEADERS, MAIN_LEVEL, seconds)
    batch = run_load(f"{base}/predict?wait=30", batch_body(1000), HEADERS, 4, seconds)
    logged = bench.redis.client().xlen("mlops:predlog:iris")
    bench.stop(gateway)
    bench.stop(worker)
    bench.redis.client().flushdb()
    return {"sync_rps": sync["rps"], "sync_p50_ms": sync["p50_ms"],
            "batch_rows_per_s": batch["rps"] * 1000, "entries_logged": logged}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    bench = Bench(args.seconds, [MAIN_LEVEL], 0)
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    try:
        bench.redis.start()
        keys = SigningKeys.generate()
        bench.env = child_env(
            inherit_settings=False,
            MLOPS_REDIS_URL=bench.redis.url,
            MLOPS_ARTIFACTS_DIR=str(bench.work / "artifacts"),
            MLOPS_SIGNING__PRIVATE_KEY=keys.private_text(),
            MLOPS_SIGNING__PUBLIC_KEYS=json.dumps([keys.public_text()]),
            MLOPS_ENV="production",
            MLOPS_LOGGING__LEVEL="WARNING",
            MLOPS_AUTH__API_KEYS=f"@json {json.dumps({KEY: ['predict', 'admin']})}",
            MLOPS_PREDICTION_LOG__MAX_ENTRIES="100000",
        )
        subprocess.run(
            [sys.executable, "-m", "training", "train"], cwd=ROOT, env=bench.env, check=True,
            capture_output=True,
        )  # fmt: skip
        bench.log(f"load generator: {generator_name()}; {args.seconds}s per point")
        for round_ in range(args.rounds):
            for name in ("off", "on"):
                point = measure(bench, name == "on", args.seconds)
                runs[name].append(point)
                bench.log(
                    f"  round {round_ + 1} logging {name:<3} sync {point['sync_rps']:7.0f} req/s "
                    f"p50 {point['sync_p50_ms']:5.2f} ms  batch {point['batch_rows_per_s']:8.0f} "
                    f"rows/s  ({point['entries_logged']} entries logged)"
                )
    finally:
        bench.close()
    for figure in ("sync_rps", "batch_rows_per_s"):
        off = statistics.median(p[figure] for p in runs["off"])
        on = statistics.median(p[figure] for p in runs["on"])
        bench.log(f"median {figure}: off {off:,.0f}  on {on:,.0f}  on/off {on / off:.1%}")


if __name__ == "__main__":
    main()

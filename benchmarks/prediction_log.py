"""What the prediction log costs: `make bench`'s figures with logging off and on.

``python -m benchmarks.prediction_log [--rounds 3] [--seconds 6] [--drain-only]`` starts its own
redis-server and trains iris. First the worker drain (one pool process), on the same queued
messages each time, logging off and on in turns (the order swapped every round). Then,
``rounds`` times in turn, a worker and a gateway (as `make bench` does) with
``prediction_log.enabled`` false and true (sample_ratio 1; the order swapped every round),
each measured with the bench's
closed-loop load: sync and async single-row requests at 16 connections and sync batches of
1,000 rows at 4. The medians are reported, and their ratio (the issue allows 5 %). ``--flush``
times the flush of a burst of entries to the store.
Throughput on a shared 2-core machine moves by more than 5 % from one point to the next, so
the CPU each part spends per sync request (Redis from INFO cpu, the worker's and the
gateway's process trees from /proc) is reported too, and ``--micro`` times the publish step
alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from benchmarks.report import MAIN_LEVEL
from benchmarks.run import HEADERS, KEY, SINGLE, Bench, batch_body
from core.settings import get_settings
from core.signing import SigningKeys
from scripts import commands
from scripts.load import generator_name, run_load
from scripts.processes import ROOT, child_env, free_port, process_tree, wait_until

TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its children, from /proc."""
    total = 0
    for member in process_tree(pid):
        try:
            stat = Path(f"/proc/{member}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / TICK


def cpu(bench: Bench, worker, gateway) -> dict:
    info = bench.redis.client().info("cpu")
    return {
        "redis": info["used_cpu_sys"] + info["used_cpu_user"],
        "worker": tree_cpu(worker.pid),
        "gateway": tree_cpu(gateway.pid),
    }


def measure(bench: Bench, logging_on: bool, seconds: float) -> dict:
    bench.redis.client().flushdb()  # the drain's entries are not this point's
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
    before = cpu(bench, worker, gateway)
    sync = run_load(f"{base}/predict?wait=10", single, HEADERS, MAIN_LEVEL, seconds)
    after = cpu(bench, worker, gateway)
    per_request = {
        f"{part}_us": (after[part] - before[part]) / max(1, sync["requests"]) * 1e6
        for part in before
    }
    asynchronous = run_load(f"{base}/predict", single, HEADERS, MAIN_LEVEL, seconds)
    bench.drain_queue()  # the async jobs answered before the next point
    batch = run_load(f"{base}/predict?wait=30", batch_body(1000), HEADERS, 4, seconds)
    logged = bench.redis.client().xlen("mlops:predlog:iris")
    bench.stop(gateway)
    bench.stop(worker)
    bench.redis.client().flushdb()
    return {"sync_rps": sync["rps"], "sync_p50_ms": sync["p50_ms"],
            "async_rps": asynchronous["rps"], "batch_rows_per_s": batch["rps"] * 1000,
            "entries_logged": logged,
            **per_request}  # fmt: skip


QUEUED = "bench:queued"  # the drain's messages, kept to queue them again for each run


def drain_ab(bench: Bench, rounds: int) -> dict[str, list[float]]:
    """The worker drain (one pool process) of the same queued messages, logging off and on in
    turns: `make bench`'s drain figure, with the gateway's grouping, which differs from one
    filling to the next, taken out of the comparison."""
    client = bench.redis.client()
    messages = bench.fill_queue(free_port(), bench.drain_jobs)
    client.copy("predict", QUEUED)
    rates: dict[str, list[float]] = {"off": [], "on": []}
    for name in ("off", "on"):
        rates[f"{name} pool µs/job"] = []
    for round_ in range(rounds):
        for name in ("off", "on") if round_ % 2 == 0 else ("on", "off"):  # no order effect
            client.copy(QUEUED, "predict", replace=True)
            client.delete("mlops:predlog:iris", "mlops:predlog:iris:index")
            drained = bench.drain_queued(
                time.time(), MLOPS_PREDICTION_LOG__ENABLED="true" if name == "on" else "false"
            )
            stamps = drained.stamps
            rates[name].append((len(stamps) - 1) / (stamps[-1] - stamps[0]))
            rates[f"{name} pool µs/job"].append(drained.pool_cpu_s / len(stamps) * 1e6)
            bench.log(
                f"  round {round_ + 1} logging {name:<3} drain {rates[name][-1]:7.0f} jobs/s, "
                f"pool CPU {rates[f'{name} pool µs/job'][-1]:5.1f} µs/job "
                f"({len(stamps)} jobs in {messages} messages, the same each time)"
            )
    return rates


def micro(rounds: int, messages: int = 2000) -> None:
    """The publish step alone (workers/batches.py ``publish``) against a private redis-server,
    with and without the log, in turns: the Redis CPU (INFO cpu) and the worker's CPU
    (process_time) per job, for messages of 1, 4 and 16 one-row jobs."""
    from tests.factories import Constant, loaded_model, predict_job
    from workers.batches import publish
    from workers.inference import predict_jobs
    from workers.prediction_log import log_batch

    settings, model = get_settings(), loaded_model(estimator=Constant())
    bench = Bench(0, [1], 0)
    bench.redis.start()
    client = bench.redis.client()

    def redis_cpu() -> float:
        info = client.info("cpu")
        return info["used_cpu_sys"] + info["used_cpu_user"]

    try:
        for n in (1, 4, 16):
            jobs = [predict_job(f"j{i}", [[1.0, 2.0]], ["a", "b"], owner="o") for i in range(n)]
            results = predict_jobs(model, jobs)
            found: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
            for _ in range(rounds):
                for logging_on in (False, True):
                    redis_before, worker_before = redis_cpu(), time.process_time()
                    for _ in range(messages):
                        batch = log_batch(settings, model, jobs, results) if logging_on else None
                        publish(client, results, 3600, batch)
                    worker = (time.process_time() - worker_before) / messages / n * 1e6
                    found[logging_on].append(((redis_cpu() - redis_before) / messages / n * 1e6,
                                              worker))  # fmt: skip
            off = [statistics.median(x) for x in zip(*found[False], strict=True)]
            on = [statistics.median(x) for x in zip(*found[True], strict=True)]
            bench.log(
                f"  {n:2d} job(s)/message, CPU per job: redis {off[0]:5.1f} -> {on[0]:5.1f} µs, "
                f"worker {off[1]:5.1f} -> {on[1]:5.1f} µs (logging off -> on)"
            )
    finally:
        bench.close()


def _sleeper(done, late: list[float]) -> None:
    """Sleep 1 ms at a time until ``done``; append how late each wake-up was (seconds)."""
    while not done.is_set():
        started = time.perf_counter()
        time.sleep(0.001)
        late.append(time.perf_counter() - started - 0.001)


def flush(entries: int = 2000) -> None:
    """One flush (core/datasets.py) of ``entries`` log entries shaped like a burst of batch
    requests (one job of 1,000 rows each) and of 12 one-row jobs each (grouped single
    predictions), against a private redis-server, with a thread beside it that sleeps 1 ms
    at a time: how late it wakes is how long the flush held the GIL, which the worker's
    consuming process shares with it (workers/flusher.py)."""
    import tempfile
    import threading

    from core.datasets import flush_predictions
    from core.prediction_log import append_command
    from core.store import LocalStorage, ModelStore

    bench = Bench(0, [1], 0)
    bench.redis.start()
    client = bench.redis.client()
    try:
        for jobs, rows in ((1, 1000), (12, 1)):
            client.flushdb()
            pipe = client.pipeline(transaction=False)
            for i in range(entries):
                logged = [(f"job-{i}-{j}", f"r{i}", "owner", [[5.1, 3.5, 1.4, 0.2]] * rows,
                           ["setosa"] * rows) for j in range(jobs)]  # fmt: skip
                pipe.execute_command(*append_command("iris", 1, time.time(), logged, 10**9))
            pipe.execute()
            folder = LocalStorage(Path(tempfile.mkdtemp(dir=bench.work)))
            fmt = str(get_settings().training.artifact_format)
            store = ModelStore(folder, "iris", SigningKeys.generate(), fmt)
            late: list[float] = []
            done = threading.Event()
            ticker = threading.Thread(target=_sleeper, args=(done, late))
            ticker.start()
            started, cpu_before = time.perf_counter(), time.process_time()
            written = flush_predictions(client, store, 5000)
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu_before
            done.set()
            ticker.join()
            bench.log(
                f"  {entries} entries of {jobs} job(s) x {rows} row(s): {written} jobs flushed in "
                f"{wall * 1000:,.0f} ms ({cpu * 1000:,.0f} ms CPU); the 1 ms sleeper woke at most "
                f"{max(late) * 1000:.1f} ms late"
            )
    finally:
        bench.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--drain-jobs", type=int, default=20000)
    parser.add_argument("--micro", action="store_true", help="the publish step alone")
    parser.add_argument("--drain-only", action="store_true", help="the drain's A/B alone")
    parser.add_argument("--flush", action="store_true", help="one flush to the store, timed")
    args = parser.parse_args()
    if args.micro:
        micro(args.rounds)
        return
    if args.flush:
        flush()
        return
    bench = Bench(args.seconds, [MAIN_LEVEL], args.drain_jobs)
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
        drains = drain_ab(bench, args.rounds)
        for round_ in range(0 if args.drain_only else args.rounds):
            for name in ("off", "on") if round_ % 2 == 0 else ("on", "off"):  # no order effect
                point = measure(bench, name == "on", args.seconds)
                runs[name].append(point)
                bench.log(
                    f"  round {round_ + 1} logging {name:<3} sync {point['sync_rps']:7.0f} req/s "
                    f"p50 {point['sync_p50_ms']:5.2f} ms  async {point['async_rps']:7.0f} req/s  "
                    f"batch {point['batch_rows_per_s']:8.0f} "
                    f"rows/s  ({point['entries_logged']} entries logged); CPU per sync request: "
                    f"redis {point['redis_us']:.0f} µs, worker {point['worker_us']:.0f} µs, "
                    f"gateway {point['gateway_us']:.0f} µs"
                )
    finally:
        bench.close()
    figures = ("sync_rps", "async_rps", "batch_rows_per_s", "redis_us", "worker_us", "gateway_us")
    for figure in figures:
        if args.drain_only:
            break
        off = statistics.median(p[figure] for p in runs["off"])
        on = statistics.median(p[figure] for p in runs["on"])
        bench.log(f"median {figure}: off {off:,.1f}  on {on:,.1f}  on/off {on / off:.1%}")
    off, on = statistics.median(drains["off"]), statistics.median(drains["on"])
    ratios = [b / a for a, b in zip(drains["off"], drains["on"], strict=True)]
    bench.log(
        f"median drain jobs/s: off {off:,.1f}  on {on:,.1f}  on/off {on / off:.1%}; median of "
        f"the rounds' ratios {statistics.median(ratios):.1%} ({min(ratios):.0%}-{max(ratios):.0%})"
    )
    off, on = (statistics.median(drains[f"{name} pool µs/job"]) for name in ("off", "on"))
    bench.log(
        f"median drain pool CPU per job: off {off:.1f} µs  on {on:.1f} µs  on/off {on / off:.1%}"
    )


if __name__ == "__main__":
    main()

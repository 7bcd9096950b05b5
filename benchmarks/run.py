"""`make bench`: one machine, every figure of the performance issues (#15, #16).

Starts its own redis-server, a worker (as shipped: worker.concurrency pool processes), the
gateway, the two yardsticks and the peer, MLServer (benchmarks/peer.py), each serving the same
iris artifact and a 200-tree random forest. It drives them with a load generator in a separate
process, in rounds (three by default: each figure is their median, with its spread;
benchmarks/rounds.py, noise.py), each point with the CPU per request of the server's processes.
Then, once: two models on one worker, what tracing and waiting for a Redis replica cost
(benchmarks/costs.py) and the worker drain. Writes benchmarks/results/latest.json, latest.md
and latency.png.

``--scaling`` (`make bench-scaling`) runs the scaling mode instead (benchmarks/scaling.py):
1, 2 and 4 pool processes against 1 and 2 gateway processes, with the CPU of each part.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import httpx

from benchmarks import many_models, peer, rounds, scaling, versus
from benchmarks.costs import Costs
from benchmarks.cpu import (
    CpuMeter,
    children_of,
    per_request_us,
    process_seconds,
    service_us,
    tree,
)
from benchmarks.report import evaluate, write_reports
from benchmarks.rounds import FOREST, MAIN_LEVEL, Mode
from core.settings import get_settings
from core.signing import SigningKeys
from scripts import commands
from scripts.load import generator_name, run_load
from scripts.processes import (
    ROOT,
    Process,
    RedisServer,
    child_env,
    free_port,
    process_tree,
    status_kib,
    wait_until,
)

RESULTS = ROOT / "benchmarks" / "results"
KEY = "bench-key"
SINGLE = {
    "request_id": "bench",
    "sepal_length": 5.1,
    "sepal_width": 3.5,
    "petal_length": 1.4,
    "petal_width": 0.2,
}
HEADERS = {"Content-Type": "application/json", "X-API-Key": KEY}
V2_INFER = "/v2/models/iris/infer"  # the Open Inference Protocol's route for the same model
WARM_UP_S = 1.0  # seconds of load before each point of a round (benchmarks/rounds.py)


def batch_rows(n: int) -> list[list[float]]:
    return [[5.1 + (i % 30) / 10, 3.5, 1.4 + (i % 50) / 10, 0.2 + (i % 20) / 10] for i in range(n)]


def batch_body(n: int) -> bytes:
    return json.dumps({"request_id": "bench-batch", "instances": batch_rows(n)}).encode()


def v2_body(rows: list[list[float]]) -> bytes:
    """The same rows as an Open Inference Protocol request (one FP64 tensor, flat data)."""
    data = [value for row in rows for value in row]
    tensor = {"name": "input-0", "shape": [len(rows), 4], "datatype": "FP64", "data": data}
    return json.dumps({"id": "bench", "inputs": [tensor]}).encode()


class Drained(NamedTuple):
    """A drain: the sorted completion times of the jobs it answered (SUCCESS at or after its
    ``since``), how many job records there are, the worker's peak RSS (MiB) and the CPU
    seconds of its pool process (the steadier figure on a shared machine)."""

    stamps: list[float]
    records: int
    peak_rss_mb: float
    pool_cpu_s: float


class Bench:
    def __init__(self, seconds: float, levels: list[int], drain_jobs: int, runs: int = 1):
        self.seconds = seconds
        self.levels = sorted(set(levels) | {1, MAIN_LEVEL})  # the targets' two levels
        self.drain_jobs = drain_jobs
        self.runs = runs
        self.work = Path(tempfile.mkdtemp(prefix="mlops-bench-"))
        self.redis = RedisServer(self.work / "redis")
        self.env = {}
        self.services: list[Process] = []

    def log(self, text: str) -> None:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def start(self, name: str, args: list[str], **env: str) -> Process:
        service = Process(name, args, {**self.env, **env}, self.work / "logs").start()
        self.services.append(service)
        return service

    def stop(self, service: Process) -> None:
        service.stop()
        self.services.remove(service)

    def http_up(self, port: int, service: Process, path: str = "/openapi.json") -> None:
        def up() -> bool:
            if not service.alive():
                raise RuntimeError(f"{service.name} exited:\n{service.output()[-3000:]}")
            return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1).status_code == 200

        wait_until(up, 60, f"{service.name} on port {port}")

    def warmed(self, mode: Mode, connections: int) -> dict:
        """One point of ``mode`` after a warm-up of WARM_UP_S at the same level: its server sat
        idle while the other modes ran."""
        run_load(mode.urls, mode.body, HEADERS, connections, WARM_UP_S)  # not reported
        self.drain_queue()
        point = self.measured(mode.urls, mode.body, mode.parts, connections)
        self.log_point(f"{mode.name}, c={connections}", point)
        return point

    def drain_queue(self) -> None:
        """Until no predict message waits or runs (kombu's ``unacked`` hash holds those a
        worker took but has not finished: workers/recovery.py)."""
        client = self.redis.client()
        wait_until(
            lambda: client.llen("predict") == 0 and client.hlen("unacked") == 0,
            300,
            "the predict queue to drain",
        )

    # -- the measurements --------------------------------------------------------------
    def yardstick(self, name: str, app: str, **env: str) -> tuple[Process, str]:
        """A yardstick (benchmarks/yardsticks.py) under uvicorn on a free port, once it is up."""
        port = free_port()
        args = ["uvicorn", app, "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
        service = self.start(name, args, **env)
        self.http_up(port, service)
        return service, f"http://127.0.0.1:{port}"

    def mlserver(self, artifacts: dict[str, Path]) -> tuple[Process | None, str]:
        """The peer serving ``artifacts`` once every model is ready: ``(process, base URL)``,
        or ``(None, why not)`` when it cannot be installed or started (the bench goes on)."""
        self.log(f"{peer.NAME}: its environment {peer.VENV} (made on first use, minutes)")
        reason = peer.ensure_venv()
        if reason:
            self.log(f"  {reason}: measured without it")
            return None, reason
        folder = self.work / "mlserver"
        ports = (free_port(), free_port(), free_port())
        peer.write_repository(folder, artifacts, ports)
        env = child_env(inherit_settings=False)  # none of this service's settings or keys
        service = Process("mlserver", peer.command(folder), env, self.work / "logs").start()
        self.services.append(service)
        try:
            for name in artifacts:
                self.http_up(ports[0], service, f"/v2/models/{name}/ready")
        except (RuntimeError, TimeoutError) as exc:
            self.stop(service)
            reason = f"{peer.NAME} did not start: {str(exc).strip().splitlines()[-1][:300]}"
            self.log(f"  {reason}: measured without it")
            return None, reason
        return service, f"http://127.0.0.1:{ports[0]}"

    def drain(self, gateway_port: int, batch: int) -> dict:
        """Queue single-instance jobs with no worker running, then time one worker draining them."""
        self.redis.client().flushdb()
        jobs = self.drain_jobs if batch > 1 else max(1000, self.drain_jobs // 10)
        messages = self.fill_queue(gateway_port, jobs, MLOPS_BATCHING__MAX_BATCH_SIZE=str(batch))
        stamps, keys, peak, _ = self.drain_queued(since=0.0)
        span = stamps[-1] - stamps[0] if len(stamps) > 1 else float("nan")
        return {
            "jobs": keys,
            "completed": len(stamps),
            "messages": messages,
            "seconds": span,
            "jobs_per_s": (len(stamps) - 1) / span if span else 0.0,
            "worker_peak_rss_mb": peak,
        }

    def fill_queue(self, gateway_port: int, jobs: int, **gateway_env: str) -> int:
        """At least ``jobs`` single-instance jobs queued through a gateway (stopped after) with
        no worker running; how many messages hold them."""
        client = self.redis.client()
        gateway = self.start(
            "gateway-drain", commands.gateway("127.0.0.1", gateway_port), **gateway_env
        )
        self.http_up(gateway_port, gateway, "/health")
        body = json.dumps(SINGLE).encode()
        url = f"http://127.0.0.1:{gateway_port}/predict"
        while sum(1 for _ in client.scan_iter("mlops:job:*", count=5000)) < jobs:
            run_load(url, body, HEADERS, 64, 2)  # closed loop for 2 s; repeat until enough
        self.stop(gateway)
        return client.llen("predict")

    def drain_queued(self, since: float, **worker_env: str) -> Drained:
        """One worker (one pool process, ``worker_env``) drains the predict queue."""
        client = self.redis.client()
        worker = self.start("worker-drain", commands.worker("predict", 1), **worker_env)
        wait_until(lambda: client.llen("predict") == 0, 600, "the drain")
        time.sleep(0.5)
        stamps = []
        keys = [k for k in client.scan_iter("mlops:job:*", count=5000)]
        for i in range(0, len(keys), 5000):
            for raw in client.mget(keys[i : i + 5000]):
                record = json.loads(raw)
                if record.get("status") == "SUCCESS" and record["completed_at"] >= since:
                    stamps.append(record["completed_at"])
        peak = peak_rss(worker)
        pool_cpu = sum(process_seconds(children_of(worker.pid)()).values())
        self.stop(worker)
        return Drained(sorted(stamps), len(keys), peak, pool_cpu)

    def prepare(self, models: tuple[str, ...] = ("iris", "penguins", FOREST)) -> None:
        """Start Redis, set the services' environment and train a first version of each model."""
        self.redis.start()
        keys = SigningKeys.generate()  # this run's: training signs, worker and gateway verify
        self.env = child_env(
            inherit_settings=False,
            MLOPS_REDIS_URL=self.redis.url,
            MLOPS_ARTIFACTS_DIR=str(self.work / "artifacts"),
            MLOPS_SIGNING__PRIVATE_KEY=keys.private_text(),
            MLOPS_SIGNING__PUBLIC_KEYS=json.dumps([keys.public_text()]),
            MLOPS_ENV="production",
            MLOPS_LOGGING__LEVEL="WARNING",
            MLOPS_AUTH__API_KEYS=f"@json {json.dumps({KEY: ['predict', 'admin']})}",
            **many_models.PENGUINS_ENV,
            **rounds.FOREST_ENV,
        )
        for model in models:
            trained = subprocess.run(
                [sys.executable, "-m", "training", "train", "--model", model],
                cwd=ROOT, env=self.env, capture_output=True, text=True, check=False,
            )  # fmt: skip
            if trained.returncode:
                raise SystemExit(f"training {model} failed:\n{trained.stderr}")

    def worker(
        self, name: str, concurrency: int, queues: str | None = None, **env: str
    ) -> tuple[Process, int]:
        """A worker node with its metrics on a free port (the default one may be taken)."""
        port = free_port()
        args = commands.worker(queues, concurrency)
        return self.start(name, args, MLOPS_WORKER__METRICS_PORT=str(port), **env), port

    def gateway(self, name: str = "gateway", **env: str) -> tuple[Process, str]:
        """A gateway on a free port, once it is ready (Redis answers, a worker consumes)."""
        port = free_port()
        service = self.start(name, commands.gateway("127.0.0.1", port), **env)
        base = f"http://127.0.0.1:{port}"
        self.http_up(port, service, "/ready")
        return service, base

    def parts(self, gateways: list[Process], worker: Process) -> dict:
        """The parts whose CPU a point measures: gateway processes, Redis, the worker node's
        main process and its pool processes."""
        return {
            "gateway": lambda: [pid for g in gateways for pid in tree(g.pid)()],
            "redis": tree(self.redis.process.pid),
            "worker main": lambda: [worker.pid],
            "worker pool": children_of(worker.pid),
        }

    def point(
        self, urls: str | list[str], body: bytes, parts: dict, connections: int = MAIN_LEVEL
    ) -> dict:
        """One load point after a 2 s warm-up (:meth:`measured`)."""
        run_load(urls, body, HEADERS, connections, 2)
        self.drain_queue()
        return self.measured(urls, body, parts, connections)

    def measured(self, urls: str | list[str], body: bytes, parts: dict, connections: int) -> dict:
        """One load point with the CPU each part used (benchmarks/cpu.py); ``cpu_us`` is all
        the parts' together per request.

        The queue is drained before the meter stops: an async point's CPU includes the work
        its jobs cause, not only their submission."""
        meter = CpuMeter(parts)
        meter.start()
        started = time.monotonic()
        result = run_load(urls, body, HEADERS, connections, self.seconds)
        self.drain_queue()
        result["window_s"] = round(time.monotonic() - started, 2)
        result["cpu_s"] = meter.stop()
        result["cpu_us_per_request"] = per_request_us(result["cpu_s"], result["requests"])
        result["cpu_us"] = service_us(result["cpu_us_per_request"])
        return result

    def log_point(self, label: str, p: dict) -> None:
        us = p["cpu_us_per_request"]
        cpu = ", ".join(f"{name} {value:.0f}" for name, value in us.items())
        self.log(
            f"  {label:<34} {p['rps']:8.0f} req/s  p50 {p['p50_ms']:6.2f} ms  p99 "
            f"{p['p99_ms']:7.2f} ms  errors {p['errors']}  CPU µs/request: {cpu}"
        )

    def run(self) -> dict:
        started = time.monotonic()
        self.prepare()
        store = self.work / "artifacts"
        results: dict = {"runs": self.runs}
        self.log(f"load generator: {generator_name()}; {self.seconds}s per point")

        echo, echo_url = self.yardstick("echo", "benchmarks.yardsticks:echo_app")
        inprocess, inprocess_url = self.yardstick(
            "inprocess",
            "benchmarks.yardsticks:inprocess_app",
            BENCH_MODEL_DIR=str(store / "iris/1"),
        )
        forest, forest_url = self.yardstick(
            "forest-inprocess",
            "benchmarks.yardsticks:inprocess_app",
            BENCH_MODEL_DIR=str(store / FOREST / "1"),
        )
        # The worker as shipped (worker.concurrency pool processes); the drain below is
        # measured per pool process, as its target is.
        concurrency = get_settings().worker.concurrency
        worker, metrics_port = self.worker("worker", concurrency)
        gateway, base = self.gateway()
        artifacts = {name: store / name / "1" / "model.joblib" for name in ("iris", FOREST)}
        mlserver, peer_base = self.mlserver(artifacts)
        results["peer"] = peer_facts(mlserver is not None, peer_base if mlserver is None else None)

        single = json.dumps(SINGLE).encode()
        row = [v for k, v in SINGLE.items() if k != "request_id"]
        stack, every, main = self.parts([gateway], worker), self.levels, [MAIN_LEVEL]
        peer_iris, peer_forest = (
            ([], []) if mlserver is None else peer_modes(mlserver, peer_base, row, every)
        )
        modes = [
            Mode("echo", f"{echo_url}/predict", single, alone(echo), every),
            Mode("inprocess", f"{inprocess_url}/predict", single, alone(inprocess), every),
            Mode("sync", f"{base}/predict?wait=10", single, stack, every),
            *peer_iris,
            Mode("v2", f"{base}{V2_INFER}", v2_body([row]), stack, every),
            Mode("async", f"{base}/predict", single, stack, every),
            Mode("forest_inprocess", f"{forest_url}/predict", single, alone(forest), main),
            Mode("forest_sync", f"{base}/models/{FOREST}/predict?wait=10", single, stack, main),
            *peer_forest,
            Mode("batch_1000", f"{base}/predict?wait=30", batch_body(1000), stack, [4], 1000),
            Mode("v2_batch_1000", f"{base}{V2_INFER}", v2_body(batch_rows(1000)), stack, [4], 1000),
        ]
        measured = rounds.measure(self, modes, self.runs)
        results["batch_1000"] = measured.pop("batch_1000")[4]
        results["v2_batch_1000"] = measured.pop("v2_batch_1000")[4]
        results["modes"] = measured
        results["inprocess_rss_mb"] = peak_rss(inprocess)
        results["forest_inprocess_rss_mb"] = peak_rss(forest)
        if mlserver is not None:
            results["mlserver_peak_rss_mb"] = peak_rss(mlserver)
            self.stop(mlserver)
        for yardstick in (echo, inprocess, forest):
            self.stop(yardstick)

        two = many_models.measure(
            base,
            f"http://127.0.0.1:{metrics_port}/metrics",
            single,
            HEADERS,
            MAIN_LEVEL // 2,
            self.seconds,
        )
        results["two_models"] = two
        for name in ("iris_alone", "iris_with_penguins", "penguins_with_iris"):
            p = two[name]
            self.log(
                f"  {name:<19} {p['rps']:8.0f} req/s  {p['rows_per_call']:5.1f} rows per "
                "scikit-learn call"
            )
        self.drain_queue()
        results["gateway_peak_rss_mb"] = peak_rss(gateway)
        results["gateway_imports_sklearn"] = maps_mention(gateway, "sklearn")
        results["worker_peak_rss_mb"] = peak_rss(worker)
        costs = Costs(self, single, concurrency)
        results["tracing"] = costs.tracing(gateway, base, worker)  # stops them
        results["replica_ack"] = costs.replica_ack()

        drain_port = free_port()
        results["drain"] = self.drain(drain_port, batch=256)
        results["drain_one_per_message"] = self.drain(drain_port, batch=1)
        for name in ("drain", "drain_one_per_message"):
            d = results[name]
            self.log(f"  {name:<22} {d['jobs_per_s']:8.0f} jobs/s ({d['messages']} messages)")
        results["worker_concurrency"] = concurrency
        results["machine"] = machine()
        results["load_generator"] = generator_name()
        results["seconds_per_point"] = self.seconds
        results["duration_s"] = round(time.monotonic() - started)
        results["targets"] = evaluate(results)
        results["targets_16"] = versus.evaluate(results)
        return results

    def close(self) -> None:
        for service in list(self.services):
            service.stop()
        self.redis.stop()
        shutil.rmtree(self.work, ignore_errors=True)


def alone(server: Process) -> dict:
    """The parts of a server that is one process tree (a yardstick)."""
    return {"server": tree(server.pid)}


def peer_modes(
    mlserver: Process, base: str, row: list[float], levels: list[int]
) -> tuple[list[Mode], list[Mode]]:
    """MLServer's modes: iris at every level, the forest at the main one, all its processes
    (HTTP, inference worker, multiprocessing's resource tracker) measured."""
    parts = {"mlserver main": lambda: [mlserver.pid], "mlserver workers": children_of(mlserver.pid)}
    body = peer.infer_body(row)
    return (
        [Mode("mlserver", f"{base}/v2/models/iris/infer", body, parts, levels)],
        [Mode("forest_mlserver", f"{base}/v2/models/{FOREST}/infer", body, parts, [MAIN_LEVEL])],
    )


def peer_facts(available: bool, reason: str | None) -> dict:
    """What the report says of the peer: how it was set up, or why it is missing."""
    return {
        "name": peer.NAME,
        "available": available,
        "reason": reason,
        "max_batch_size": peer.MAX_BATCH_SIZE,
        "max_batch_time_ms": peer.MAX_BATCH_TIME * 1000,
        "parallel_workers": peer.PARALLEL_WORKERS,
    }


def peak_rss(service: Process) -> float:
    """Peak resident memory (VmHWM) of the service's process tree, in MiB, summed."""
    total = 0
    for pid in process_tree(service.pid):
        with contextlib.suppress(FileNotFoundError):
            total += status_kib(pid, "VmHWM")
    return round(total / 1024, 1)


def maps_mention(service: Process, needle: str) -> bool:
    for pid in process_tree(service.pid):
        try:
            if needle in Path(f"/proc/{pid}/maps").read_text():
                return True
        except FileNotFoundError:
            continue
    return False


WAKE_PROBE = """
import json, statistics, time
doc = {"rows": [[5.1, 3.5, 1.4, 0.2]] * 20, "ids": [str(i) for i in range(20)]}
def work():
    for _ in range(5):
        json.loads(json.dumps(doc))
def timed(idle):
    times = []
    for _ in range(200):
        if idle:
            time.sleep(idle)
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6
print(json.dumps({"back_to_back_us": timed(0), "after_idle_us": timed(0.005)}))
"""
"""The same small piece of Python timed back to back and after 5 ms asleep. On a virtual machine
whose idle vCPUs are descheduled (or whose cores slow down when idle) the second is several
times the first, and every process a request crosses at one connection pays it: the service's
four (gateway, Redis, the worker's main and pool processes) against in-process serving's one."""


def wake_penalty() -> dict:
    """:data:`WAKE_PROBE`'s two medians (µs) and their ratio, in a fresh interpreter."""
    probe = subprocess.run(
        [sys.executable, "-c", WAKE_PROBE], capture_output=True, text=True, check=True
    )
    times = json.loads(probe.stdout)
    return {**times, "ratio": times["after_idle_us"] / times["back_to_back_us"]}


def machine() -> dict:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "wake_penalty": wake_penalty(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=4.0, help="duration of each load point")
    parser.add_argument(
        "--runs", type=int, default=3, help="rounds of every mode; figures are their medians"
    )
    parser.add_argument(
        "--levels", default="1,4,16,64", help="connection counts to sweep (1 and 16 always)"
    )
    parser.add_argument("--drain-jobs", type=int, default=20000)
    parser.add_argument(
        "--scaling", action="store_true", help="the scaling mode (benchmarks/scaling.py)"
    )
    parser.add_argument(
        "--connections", type=int, default=MAIN_LEVEL, help="the scaling mode's connections"
    )
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    bench = Bench(args.seconds, levels, args.drain_jobs, max(1, args.runs))
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.scaling:
        try:
            results = scaling.measure(bench, json.dumps(SINGLE).encode(), args.connections)
            results["machine"] = machine()
            results["load_generator"] = generator_name()
        finally:
            bench.close()
        scaling.write_reports(results, RESULTS)
        sys.stdout.write((RESULTS / "scaling.md").read_text())
        return
    try:
        results = bench.run()
    finally:
        bench.close()
    write_reports(results, RESULTS)
    sys.stdout.write((RESULTS / "latest.md").read_text())
    if any(t["met"] is False for t in results["targets"] + results["targets_16"]):
        sys.stdout.write("\nsome targets were not met (see above)\n")
    sys.stdout.write(f"make bench's measurements took {results['duration_s'] / 60:.1f} min\n")


if __name__ == "__main__":
    main()

"""The scaling mode's report: the capacity table, where the CPU went, and the sizing rule.

Plain functions of the measured points (benchmarks/scaling.py), so they are unit-tested.
A point is one load run: ``mode`` ("sync" or "async"), ``pool_processes``,
``gateway_processes``, req/s, p50, p99, errors, and the CPU seconds of each part
(``cpu_s``) and per request (``cpu_us_per_request``) from benchmarks/cpu.py.
"""

from __future__ import annotations

import math
import statistics

from benchmarks.cpu import LOAD_GENERATOR, REST

MODES = ("sync", "async")
HEADROOM = 0.7  # plan each process at 70 % of a core, as the gateway's HPA does
# The parts a deployment sizes, and the measured parts each is made of.
ROLES = {
    "gateway": ("gateway",),
    "worker": ("worker main", "worker pool"),
    "redis": ("redis",),
}


def role_us(point: dict, role: str) -> float:
    """CPU microseconds per request of one role (a worker is its main and pool processes)."""
    return sum(point["cpu_us_per_request"].get(part, 0.0) for part in ROLES[role])


def sizing(points: list[dict]) -> dict:
    """Per mode and role: CPU µs per request (median over every point of the mode, and its
    range) and what one core of that role serves, requests/s = 1e6 / µs."""
    rule = {}
    for mode in MODES:
        of_mode = [p for p in points if p["mode"] == mode and p["requests"]]
        if not of_mode:
            continue
        rule[mode] = {}
        for role in ROLES:
            values = [role_us(p, role) for p in of_mode]
            median = statistics.median(values)
            rule[mode][role] = {
                "us_per_request": round(median, 1),
                "min_us": round(min(values), 1),
                "max_us": round(max(values), 1),
                "requests_per_cpu_second": round(1e6 / median) if median else None,
            }
        total = sum(rule[mode][role]["us_per_request"] for role in ROLES)
        rule[mode]["service"] = {
            "us_per_request": round(total, 1),
            "requests_per_cpu_second": round(1e6 / total) if total else None,
        }
        # A node's main process (Celery's consumer: receives, hands to the pool, acknowledges)
        # is one process: whatever the pool, a node serves at most one core's worth of it.
        main = statistics.median(p["cpu_us_per_request"].get("worker main", 0.0) for p in of_mode)
        rule[mode]["node_ceiling_rps"] = round(1e6 / main) if main else None
    return rule


def processes_for(rate: float, us_per_request: float, headroom: float = HEADROOM) -> int:
    """Processes (one core each at most) that serve ``rate`` requests/s at ``headroom``."""
    return max(1, math.ceil(rate * us_per_request / 1e6 / headroom))


def cores_busy(point: dict) -> dict[str, float]:
    """Cores each group kept busy over the point's window: the service, the load generator,
    every other process on the machine, and the share of the machine busy in all."""
    cpu, window = point["cpu_s"], point["window_s"]
    service = sum(v for k, v in cpu.items() if k not in (LOAD_GENERATOR, REST, "wall x cores"))
    busy = service + cpu.get(LOAD_GENERATOR, 0.0) + cpu.get(REST, 0.0)
    total = cpu.get("wall x cores") or 0.0
    return {
        "service": service / window,
        "load generator": cpu.get(LOAD_GENERATOR, 0.0) / window,
        "other": cpu.get(REST, 0.0) / window,
        "machine busy": busy / total if total else 0.0,
    }


def _find(points: list[dict], mode: str, pool: int, gateways: int) -> dict | None:
    for p in points:
        if (p["mode"], p["pool_processes"], p["gateway_processes"]) == (mode, pool, gateways):
            return p
    return None


def markdown(results: dict) -> str:
    points, m = results["points"], results["machine"]
    pools = sorted({p["pool_processes"] for p in points})
    gateways = sorted({p["gateway_processes"] for p in points})
    lines = [
        f"Scaling run of {m['date']} on {m['cpu']} ({m['cores']} cores), Python {m['python']}; "
        f"load generator `{results['load_generator']}`, {results['seconds_per_point']} s per "
        f"point, {results['connections']} connections spread evenly over the gateway "
        "processes. One worker node (`-Q predict`) with 1, 2 or 4 pool processes; 1 or 2 "
        "gateway processes (`python -m app`, each on its own port); Redis, the load generator "
        "and every process on the same machine. Sync is `POST /predict?wait=10`, async "
        "`POST /predict` (202); an async point's CPU includes draining the jobs it queued.",
        "",
        "| pool processes | gateway processes | sync req/s | sync p50 / p99 ms "
        "| async req/s | async p50 / p99 ms | req/s vs 1 x 1 (sync / async) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = {mode: _find(points, mode, pools[0], gateways[0]) for mode in MODES}
    for pool in pools:
        for count in gateways:
            cells = [str(pool), str(count)]
            ratios = []
            for mode in MODES:
                p = _find(points, mode, pool, count)
                if p is None:
                    cells += ["—", "—"]
                    ratios.append("—")
                    continue
                errors = f" ({p['errors']} errors)" if p["errors"] else ""
                cells += [f"{p['rps']:,.0f}{errors}", f"{p['p50_ms']:.1f} / {p['p99_ms']:.1f}"]
                b = base[mode]
                ratios.append(f"{p['rps'] / b['rps']:.2f}x" if b and b["rps"] else "—")
            cells.append(" / ".join(ratios))
            lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "CPU per request (µs, user + system from /proc) and the cores each group kept busy:",
        "",
        "| pool | gateways | mode | gateway | Redis | worker main | worker pool "
        "| service cores | load generator cores | other jobs' cores | machine busy |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        us, cores = p["cpu_us_per_request"], cores_busy(p)
        lines.append(
            f"| {p['pool_processes']} | {p['gateway_processes']} | {p['mode']} "
            f"| {us.get('gateway', 0):.0f} | {us.get('redis', 0):.0f} "
            f"| {us.get('worker main', 0):.0f} | {us.get('worker pool', 0):.0f} "
            f"| {cores['service']:.2f} | {cores['load generator']:.2f} | {cores['other']:.2f} "
            f"| {cores['machine busy']:.0%} |"
        )
    lines += ["", *sizing_text(results["sizing"], m["cores"])]
    return "\n".join(lines) + "\n"


def sizing_text(rule: dict, cores: int) -> list[str]:
    lines = [
        f"**Not linear here.** The {cores} cores are shared by the load generator, Redis, the "
        "gateways and the workers: once the machine is busy (the last column), another "
        "process adds context switches, not capacity. What carries over to a bigger machine "
        "is the CPU each request costs each part, so the rule below is per core. It was "
        "measured at one load: at higher rates the gateway groups more jobs per message and "
        "each request costs less, so it errs on the safe side.",
        "",
        "| mode | part | CPU µs per request (median; range) | requests/s per CPU-second |",
        "|---|---|---:|---:|",
    ]
    for mode, roles in rule.items():
        for role in (*ROLES, "service"):
            r = roles[role]
            spread = f"; {r['min_us']:.0f} to {r['max_us']:.0f}" if "min_us" in r else ""
            lines.append(
                f"| {mode} | {role} | {r['us_per_request']:.0f}{spread} "
                f"| {r['requests_per_cpu_second'] or 0:,} |"
            )
    lines.append("")
    for mode, roles in rule.items():
        g, w, r = (roles[role]["us_per_request"] for role in ROLES)
        ceiling = roles.get("node_ceiling_rps")
        node = (
            f" A worker node's main process is one core at most: about {ceiling:,} requests/s "
            "per node whatever its pool, so past that add nodes, not pool processes."
            if ceiling
            else ""
        )
        lines.append(
            f"- **{mode}**, for R requests/s with each core at most {HEADROOM:.0%} busy: "
            f"gateway processes (one core each) = R x {g:.0f} µs / {HEADROOM:.0%}; worker "
            f"cores (main and pool processes) = R x {w:.0f} µs / {HEADROOM:.0%}; Redis (one "
            f"thread) = R x {r:.0f} µs of one core, so about {HEADROOM * 1e6 / r:,.0f} "
            f"requests/s per Redis. For 1,000 requests/s: {processes_for(1000, g)} gateway "
            f"process(es) and {processes_for(1000, w)} worker core(s).{node}"
            if r
            else f"- **{mode}**: no Redis CPU measured."
        )
    return lines

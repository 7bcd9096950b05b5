"""Targets, the Markdown table and the latency chart of a benchmark run."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import versus
from benchmarks.noise import ratios, summary
from benchmarks.rounds import MAIN_LEVEL, point_at
from benchmarks.versus import spread

__all__ = ["MAIN_LEVEL", "evaluate", "markdown", "write_reports"]


def _at(results: dict, mode: str) -> dict:
    return point_at(results, mode) or list(results["modes"][mode].values())[-1]


def _ratio(a: dict, b: dict, field: str = "rps") -> float:
    """The median of the runs' ratios (benchmarks/noise.py)."""
    return summary(ratios(a, b, field))["median"]


def evaluate(results: dict) -> list[dict]:
    """The first performance issue's targets (#15); ratios within each run, then medians."""
    echo, base = _at(results, "echo"), _at(results, "inprocess")
    sync, asyn, v2 = _at(results, "sync"), _at(results, "async"), _at(results, "v2")
    drain, single = results["drain"], results["drain_one_per_message"]
    drain_ratio = drain["jobs_per_s"] / single["jobs_per_s"] if single["jobs_per_s"] else 0.0
    p50_ratio = _ratio(sync, base, "p50_ms")
    p99_of_p50 = summary(x["p99_ms"] / x["p50_ms"] for x in sync.get("runs", [sync]))["median"]
    return [
        {
            "target": "sync throughput >= 2x in-process",
            "value": f"{_ratio(sync, base):.2f}x",
            "met": _ratio(sync, base) >= 2,
        },
        {
            "target": "sync p50 <= in-process p50",
            "value": f"{sync['p50_ms']:.2f} ms vs {base['p50_ms']:.2f} ms ({p50_ratio:.2f}x)",
            "met": p50_ratio <= 1,
        },
        {
            "target": "sync p99 <= 3x its own p50",
            "value": f"{p99_of_p50:.2f}x",
            "met": p99_of_p50 <= 3,
        },
        {
            "target": "V2 infer throughput within 10% of sync /predict",
            "value": f"{_ratio(v2, sync):.0%} ({v2['rps']:,.0f} vs {sync['rps']:,.0f} req/s)",
            "met": _ratio(v2, sync) >= 0.9,
        },
        {
            "target": "async submit >= 60% of echo",
            "value": f"{_ratio(asyn, echo):.0%}",
            "met": _ratio(asyn, echo) >= 0.6,
        },
        {
            "target": "worker drain >= 20x one-task-per-job",
            "value": f"{drain_ratio:.1f}x ({drain['jobs_per_s']:.0f} jobs/s)",
            "met": drain_ratio >= 20,
        },
        {
            "target": "batches of 1000 >= 200,000 rows/s",
            "value": f"{results['batch_1000']['rows_per_s']:,.0f} rows/s",
            "met": results["batch_1000"]["rows_per_s"] >= 200_000,
        },
        {
            "target": "gateway does not import scikit-learn",
            "value": f"gateway RSS {results['gateway_peak_rss_mb']} MiB, "
            f"worker {results['worker_peak_rss_mb']} MiB",
            "met": not results["gateway_imports_sklearn"],
        },
    ]


def _header(results: dict) -> list[str]:
    m = results["machine"]
    pool = results.get("worker_concurrency", 1)
    runs = results.get("runs", 1)
    took = results.get("duration_s")
    return [
        f"Benchmark of {m['date']} on {m['cpu']} ({m['cores']} cores), Python {m['python']}; "
        f"load generator `{results['load_generator']}`, {results['seconds_per_point']} s per "
        f"point, {MAIN_LEVEL} connections unless noted. Everything (load generator, Redis, "
        f"gateway, one worker with {pool} pool process(es), as shipped) on the same machine; "
        "the drain runs one pool process.",
        "",
        f"Each figure of the first two tables is the median of {runs} round(s), with the rounds' "
        "min-max in brackets; a round measures every mode at one level after another (the "
        "modes' order reversed every other round), and each ratio is the median of the "
        "ratios within each round. Two models on one worker, the options' costs "
        "and the drain are measured once."
        + (f" The measurements took {took / 60:.1f} min." if took else ""),
        *_wake_penalty(m.get("wake_penalty")),
    ]


def _wake_penalty(wake: dict | None) -> list[str]:
    if not wake:
        return []
    return [
        "",
        f"The machine's wake-up penalty (benchmarks/run.py `WAKE_PROBE`): a small piece of Python "
        f"takes {wake['after_idle_us']:.0f} µs after 5 ms asleep against "
        f"{wake['back_to_back_us']:.0f} µs back to back ({wake['ratio']:.1f}x). At one "
        "connection every process a request crosses pays it: three here (gateway, Redis, the "
        "worker's main process, which serves a single idle client), one in-process.",
    ]


def markdown(results: dict) -> str:
    pool = results.get("worker_concurrency", 1)
    lines = [
        *_header(results),
        "",
        "| mode | req/s | p50 ms | p99 ms | CPU µs/request | vs in-process | vs echo |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    echo, base = _at(results, "echo"), _at(results, "inprocess")
    names = {
        "echo": "FastAPI echo, no model (ceiling)",
        "inprocess": "FastAPI predicting in-process (seed's shape)",
        "sync": "**this service, sync** `POST /predict?wait=`",
        "v2": "**this service, V2 infer** `POST /v2/models/iris/infer`",
        "async": "**this service, async submit** (202)",
        "mlserver": f"{(results.get('peer') or {}).get('name', 'MLServer')}, V2 infer (peer)",
    }
    for mode, title in names.items():
        p = point_at(results, mode)
        if p is None:
            continue
        cpu = spread(p, "cpu_us") if "cpu_us" in p else "—"
        lines.append(
            f"| {title} | {spread(p, 'rps')} | {spread(p, 'p50_ms', 2)} | "
            f"{spread(p, 'p99_ms', 2)} | {cpu} | {_ratio(p, base):.2f}x | {_ratio(p, echo):.0%} |"
        )
    lines += versus.table(results)
    drain, single = results["drain"], results["drain_one_per_message"]
    batch, v2_batch = results["batch_1000"], results["v2_batch_1000"]
    lines += [
        "",
        "| other figure | value |",
        "|---|---:|",
        f"| worker drain, one pool process, gateway-grouped messages | "
        f"{drain['jobs_per_s']:,.0f} jobs/s ({drain['jobs']:,} jobs in {drain['messages']:,} "
        "messages) |",
        f"| worker drain, one message per job (one-task-per-job baseline) | "
        f"{single['jobs_per_s']:,.0f} jobs/s |",
        f"| batch requests of 1,000 instances (4 connections, sync) | "
        f"{spread(batch, 'rows_per_s')} rows/s, p50 {batch['p50_ms']:.1f} ms |",
        f"| the same as V2 infer requests (one `[1000, 4]` FP64 tensor) | "
        f"{spread(v2_batch, 'rows_per_s')} rows/s, p50 {v2_batch['p50_ms']:.1f} ms |",
        *_two_models(results.get("two_models")),
        f"| peak RSS: gateway / worker (main + {pool} pool) / in-process server | "
        f"{results['gateway_peak_rss_mb']} / {results['worker_peak_rss_mb']} / "
        f"{results['inprocess_rss_mb']} MiB |",
        *_peer_rss(results),
        *costs_table(results),
        "",
        "| target (#15) | measured | met |",
        "|---|---|:-:|",
    ]
    for t in results["targets"]:
        lines.append(f"| {t['target']} | {t['value']} | {'yes' if t['met'] else '**no**'} |")
    return "\n".join(lines) + "\n"


def _peer_rss(results: dict) -> list[str]:
    if "mlserver_peak_rss_mb" not in results:
        return []
    return [
        f"| peak RSS: MLServer (all processes) / in-process forest server | "
        f"{results['mlserver_peak_rss_mb']} / {results.get('forest_inprocess_rss_mb', '—')} MiB |"
    ]


def _two_models(two: dict | None) -> list[str]:
    """Rows of one worker node serving two models: each keeps its own batching."""
    if not two:
        return []
    c = two["connections_per_model"]
    titles = {
        "iris_alone": f"iris alone ({c} connections, sync)",
        "iris_with_penguins": f"iris beside penguins ({c} + {c} connections, same worker)",
        "penguins_with_iris": "penguins beside iris",
    }
    return [
        f"| {title} | {two[name]['rps']:,.0f} req/s, "
        f"{two[name]['rows_per_call']:.1f} rows per scikit-learn call |"
        for name, title in titles.items()
    ]


def _us(point: dict, *parts: str) -> float:
    return sum(point["cpu_us_per_request"].get(part, 0.0) for part in parts)


def _cost_row(title: str, point: dict, without: dict | None) -> str:
    gateway = _us(point, "gateway")
    worker = _us(point, "worker main", "worker pool")
    redis = _us(point, "redis", "redis replica")
    versus = "—"
    if without is not None:
        versus = (
            f"{point['rps'] / without['rps']:.2f}x req/s, "
            f"{gateway / (_us(without, 'gateway') or 1):.2f}x gateway CPU"
        )
    errors = f" ({point['errors']} errors)" if point["errors"] else ""
    return (
        f"| {title} | {point['rps']:,.0f}{errors} | {point['p50_ms']:.2f} | "
        f"{point['p99_ms']:.2f} | {gateway:.0f} | {worker:.0f} | {redis:.0f} | {versus} |"
    )


def _spans(by_service: dict[str, int]) -> str:
    return " and ".join(f"{n:,} spans of {name}" for name, n in sorted(by_service.items()))


def costs_table(results: dict) -> list[str]:
    """What tracing and waiting for a replica cost: each against the same load without it."""
    tracing, replica = results.get("tracing"), results.get("replica_ack")
    if not tracing or not replica:
        return []
    ack = replica["replica_ack_ms"]
    off, on, spans = tracing["off"], tracing["on"], tracing["span_cost"]
    return [
        "",
        f"| what an option costs ({MAIN_LEVEL} connections) | req/s | p50 ms | p99 ms "
        "| gateway CPU µs/req | worker CPU µs/req | Redis CPU µs/req | vs without |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
        _cost_row("sync, tracing off (as shipped)", off, None),
        _cost_row("sync, tracing on (sampling 1.0, OTLP/HTTP to a local receiver)", on, off),
        _cost_row("sync, a replica attached, `replica_ack_ms = 0`", replica["sync_ack_0"], None),
        _cost_row(
            f"sync, `replica_ack_ms = {ack}`", replica[f"sync_ack_{ack}"], replica["sync_ack_0"]
        ),
        _cost_row("async, a replica attached, `replica_ack_ms = 0`", replica["async_ack_0"], None),
        _cost_row(
            f"async, `replica_ack_ms = {ack}`", replica[f"async_ack_{ack}"], replica["async_ack_0"]
        ),
        "",
        f"Tracing off imports nothing of OpenTelemetry and costs an `is None` test per traced "
        f"place. On, {_spans(on['spans_received'])} reached the receiver in "
        f"{on['exports']:,} OTLP requests ({on['spans_dropped']:.0f} dropped); in process, "
        f"without the machine's noise, the spans cost {spans['gateway_us']:.0f} µs of gateway "
        f"CPU per sync predict and {spans['worker_us']:.0f} µs of worker CPU per one-job "
        f"message (benchmarks/tracing.py). Redis CPU counts the replica too; an async point's "
        "CPU includes draining its jobs.",
    ]


def chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    labels = {
        "echo": "echo (ceiling)",
        "inprocess": "in-process predict",
        "sync": "service, sync",
        "v2": "service, V2 infer",
        "async": "service, async submit",
        "mlserver": "MLServer (peer)",
    }
    for mode, label in labels.items():
        points = results["modes"].get(mode)
        if not points:
            continue
        levels = sorted(int(k) for k in points)
        p50 = [points.get(k, points.get(str(k)))["p50_ms"] for k in levels]
        ax.plot(levels, p50, marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("concurrent connections")
    ax.set_ylabel("p50 latency (ms)")
    ax.set_title("Latency against concurrency")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_reports(results: dict, folder: Path) -> None:
    (folder / "latest.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    (folder / "latest.md").write_text(markdown(results))
    chart(results, folder / "latency.png")

"""The report's part of issue #16: this service beside MLServer, and the targets of that issue.

Every ratio is taken within each run, then the median of the runs' ratios is compared with
the target (benchmarks/noise.py); the spread shown is that of the runs' ratios.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.noise import ratios, summary
from benchmarks.rounds import MAIN_LEVEL, point_at

UNITS = {"rps": "req/s", "p50_ms": "ms", "p99_ms": "ms", "cpu_us": "µs/request"}


@dataclass(frozen=True)
class Target:
    title: str
    mode: str
    against: str
    field: str  # rps, p50_ms, p99_ms or cpu_us
    limit: float  # the ratio mode / against must reach (at least, or at most: ``higher``)
    higher: bool = True
    level: int = MAIN_LEVEL

    def evaluate(self, results: dict) -> dict:
        a, b = point_at(results, self.mode, self.level), point_at(results, self.against, self.level)
        if a is None or b is None:
            return {"target": self.title, "value": f"not measured: {missing(results)}", "met": None}
        ratio = summary(ratios(a, b, self.field))
        unit = UNITS[self.field]
        value = f"{ratio['median']:.2f}x"
        if len(a.get("runs", [])) > 1:
            value += f" ({ratio['min']:.2f}-{ratio['max']:.2f}x)"
        value += f": {figure(a[self.field], unit)} vs {figure(b[self.field], unit)}"
        met = ratio["median"] >= self.limit if self.higher else ratio["median"] <= self.limit
        return {"target": self.title, "value": value, "met": met}


TARGETS = (
    Target("sync throughput >= 1.5x MLServer's", "sync", "mlserver", "rps", 1.5),
    Target("sync p99 <= MLServer's p99", "sync", "mlserver", "p99_ms", 1.0, higher=False),
    Target(
        "sync CPU per request (all service processes) <= 0.7x MLServer's (all its processes)",
        "sync",
        "mlserver",
        "cpu_us",
        0.7,
        higher=False,
    ),
    Target(
        "one connection: sync p50 <= 1.5x in-process p50",
        "sync",
        "inprocess",
        "p50_ms",
        1.5,
        higher=False,
        level=1,
    ),
    Target(
        "random forest: sync throughput >= 3x in-process",
        "forest_sync",
        "forest_inprocess",
        "rps",
        3.0,
    ),
    Target(
        "random forest: sync throughput >= 1.5x MLServer's",
        "forest_sync",
        "forest_mlserver",
        "rps",
        1.5,
    ),
    Target("async submit >= 0.7x echo", "async", "echo", "rps", 0.7),
)


def figure(value: float, unit: str) -> str:
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.2f} {unit}"


def missing(results: dict) -> str:
    peer = results.get("peer") or {}
    return peer.get("reason") or "a mode of this target was not run"


def evaluate(results: dict) -> list[dict]:
    return [target.evaluate(results) for target in TARGETS]


def spread(point: dict, field: str, digits: int = 0) -> str:
    """A median with the runs' min-max after it, when there were several runs."""
    text = f"{point[field]:,.{digits}f}"
    low_high = point.get("spread", {}).get(field)
    if low_high and len(point.get("runs", [])) > 1:
        text += f" ({low_high[0]:,.{digits}f}-{low_high[1]:,.{digits}f})"
    return text


ROWS = (  # (model, server, mode, connections)
    ("iris", "this service, sync `POST /predict?wait=`", "sync", MAIN_LEVEL),
    ("iris", "{peer}, V2 infer", "mlserver", MAIN_LEVEL),
    ("iris", "FastAPI predicting in-process", "inprocess", MAIN_LEVEL),
    ("iris", "this service, sync", "sync", 1),
    ("iris", "{peer}, V2 infer", "mlserver", 1),
    ("iris", "FastAPI predicting in-process", "inprocess", 1),
    ("200-tree forest", "this service, sync", "forest_sync", MAIN_LEVEL),
    ("200-tree forest", "{peer}, V2 infer", "forest_mlserver", MAIN_LEVEL),
    ("200-tree forest", "FastAPI predicting in-process", "forest_inprocess", MAIN_LEVEL),
)


def table(results: dict) -> list[str]:
    """This service beside MLServer and in-process serving, both models, with CPU per request."""
    peer = results.get("peer") or {}
    name = peer.get("name", "MLServer")
    lines = ["", f"### Beside {name}", ""]
    if peer.get("available"):
        lines.append(
            f"{name} (scikit-learn runtime) serves the same artifacts with adaptive batching of "
            f"{peer['max_batch_size']} requests / {peer['max_batch_time_ms']:g} ms and "
            f"{peer['parallel_workers']} inference process(es) beside its HTTP process, access "
            "log off; each request asks for `predict` and `predict_proba`, the two answers "
            "this service gives. CPU per request: every process of the server (this service: "
            "gateway, Redis, worker main and pool processes; MLServer: all its processes; "
            "in-process: the uvicorn process), the load generator left out. In-process "
            "serving is the seed's shape: a `def` route calling `predict`, then `predict_proba`, "
            "on its one row (two passes through the forest)."
        )
    else:
        lines.append(f"**{name} was not measured**: {missing(results)}.")
    lines += [
        "",
        "| model | server | connections | req/s | p50 ms | p99 ms | CPU µs/request |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for model, server, mode, level in ROWS:
        p = point_at(results, mode, level)
        if p is None:
            continue
        lines.append(
            f"| {model} | {server.format(peer=name)} | {level} | {spread(p, 'rps')} | "
            f"{spread(p, 'p50_ms', 2)} | {spread(p, 'p99_ms', 2)} | {spread(p, 'cpu_us')} |"
        )
    lines += ["", "| target (#16) | measured: median ratio (runs' spread) | met |", "|---|---|:-:|"]
    for t in results.get("targets_16", []):
        met = {True: "yes", False: "**no**", None: "—"}[t["met"]]
        lines.append(f"| {t['target']} | {t['value']} | {met} |")
    return lines

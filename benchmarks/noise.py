"""Figures of a noisy, shared machine: the median of several runs and their spread.

`make bench` measures every mode once per round and runs several rounds (three by default),
each round touching every mode in turn (level by level: benchmarks/rounds.py), so a burst of
load from the rest of the machine lands on one run of each mode rather than on all runs of
one. A point of several runs keeps them (``runs``): ratios are taken within each run (the
issue's rule: "ratios within each run") and then their median, which a slow mode in one
round cannot drag the way a ratio of medians can.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable

SPREAD = ("rps", "p50_ms", "p99_ms", "cpu_us", "rows_per_s")  # fields whose min-max is shown


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def summary(values: Iterable[float]) -> dict[str, float]:
    """``{"median", "min", "max"}`` of some values (at least one)."""
    values = list(values)
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def combine(runs: list[dict]) -> dict:
    """One point from several runs of it: the median of each numeric field (and of each part's
    CPU per request), the spread (min, max) of the headline fields, and the runs themselves."""
    if not runs:
        raise ValueError("no runs to combine")
    fields = [k for k, v in runs[0].items() if _number(v) and all(_number(r.get(k)) for r in runs)]
    point: dict = {k: statistics.median(r[k] for r in runs) for k in fields}
    parts = set().union(*(r.get("cpu_us_per_request", {}) for r in runs))
    if parts:
        point["cpu_us_per_request"] = {
            part: statistics.median(r.get("cpu_us_per_request", {}).get(part, 0.0) for r in runs)
            for part in sorted(parts)
        }
    point["spread"] = {
        k: [min(r[k] for r in runs), max(r[k] for r in runs)] for k in SPREAD if k in fields
    }
    point["runs"] = runs
    return point


def ratios(a: dict, b: dict, field: str) -> list[float]:
    """``a[field] / b[field]`` within each run (runs paired by position), or of the two points
    themselves when they hold no runs. A zero denominator gives infinity."""
    pairs = (
        list(zip(a["runs"], b["runs"], strict=True)) if "runs" in a and "runs" in b else [(a, b)]
    )
    return [x[field] / y[field] if y[field] else float("inf") for x, y in pairs]

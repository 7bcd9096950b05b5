"""The repeated part of `make bench`: every mode at every level once per round, several rounds.

A mode is one server and one request (echo, in-process, this service's sync, V2 and async
routes, MLServer, the same for the random forest, batches of 1,000 rows) at its connection
levels. Each point carries the CPU per request of the server's processes (benchmarks/cpu.py);
the rounds are combined into medians with their spread (benchmarks/noise.py).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from benchmarks.noise import combine

if TYPE_CHECKING:
    from benchmarks.run import Bench

MAIN_LEVEL = 16  # connections, as in the issues' reference tables

# The heavier model: per-row cost dominates (200 trees; ~5 ms for one row on a quiet core,
# ~20 µs per row in a batch), trained by the project's own pipeline on the iris features.
FOREST = "iris_forest"
FOREST_TREES = 200
FOREST_ENV = {
    "MLOPS_MODELS__IRIS_FOREST__TRAINER": "iris",
    "MLOPS_MODELS__IRIS_FOREST__ESTIMATOR": "@json "
    + json.dumps(
        {
            "class_path": "sklearn.ensemble.RandomForestClassifier",
            "params": {"n_estimators": FOREST_TREES, "random_state": 42},
        }
    ),
}


@dataclass
class Mode:
    name: str
    urls: str | list[str]
    body: bytes
    parts: dict[str, Callable[[], list[int]]]  # the server's processes, by part (CpuMeter)
    levels: list[int]
    rows: int = 1  # rows per request: a point of a batch mode gains rows_per_s


def measure(bench: Bench, modes: list[Mode], runs: int) -> dict[str, dict[int, dict]]:
    """``{mode: {connections: point}}``, each point the median of ``runs`` rounds.

    A round goes level by level, every mode of a level back to back, in the modes' order and
    reversed in every other round: the two sides of a ratio (the service and its yardstick or
    peer at the same level) are measured within a minute of each other, and neither is
    always first. The shared 2-core VMs this runs on change speed over minutes (echo 3,400 to
    5,000 req/s within one run of mode after mode, every level of one before the next)."""
    collected: dict[str, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    levels = sorted({level for mode in modes for level in mode.levels})
    for run in range(1, runs + 1):
        bench.log(f"round {run} of {runs}")
        order = modes if run % 2 else modes[::-1]
        for level in levels:
            for mode in (mode for mode in order if level in mode.levels):
                point = bench.warmed(mode, level)
                if mode.rows > 1:
                    point["rows_per_s"] = point["rps"] * mode.rows
                collected[mode.name][level].append(point)
    return {
        name: {level: combine(points) for level, points in levels.items()}
        for name, levels in collected.items()
    }


def point_at(results: dict, mode: str, level: int = MAIN_LEVEL) -> dict | None:
    """A mode's point at ``level`` connections (keys are strings once read back from JSON)."""
    points = results.get("modes", {}).get(mode, {})
    return points.get(level) or points.get(str(level))

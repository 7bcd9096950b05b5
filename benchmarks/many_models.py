"""`make bench`'s two-model figure: one worker node serving two models at once keeps each
model's batching. The same closed-loop load runs on `/predict` (iris) alone, then on it and
`/models/penguins/predict` together; the worker's own metrics give the rows per scikit-learn
call of each model (`mlops_batch_size`: jobs per call, one row each here).
"""

from __future__ import annotations

import csv
import json
from concurrent.futures import ThreadPoolExecutor

import httpx
from prometheus_client.parser import text_string_to_metric_families

from scripts.load import run_load
from scripts.processes import ROOT

PENGUINS_CSV = ROOT / "tests" / "data" / "penguins_small.csv"
# The second model, as a [models.penguins] table given by environment.
PENGUINS_ENV = {
    "MLOPS_MODELS__PENGUINS__TRAINER": "csv",
    "MLOPS_MODELS__PENGUINS__CSV": "@json "
    + json.dumps({"path": str(PENGUINS_CSV), "target": "species"}),
}


def penguin_body() -> bytes:
    with PENGUINS_CSV.open() as f:
        row = next(csv.DictReader(f))
    row.pop("species")
    return json.dumps({"request_id": "bench", **{k: float(v) for k, v in row.items()}}).encode()


def batch_totals(worker_metrics: str) -> dict[tuple[str, str], float]:
    """``{(sample name, model): value}`` of the batch-size histogram a worker node exposes."""
    text = httpx.get(worker_metrics, timeout=10).text
    return {
        (s.name, s.labels.get("model", "")): s.value
        for family in text_string_to_metric_families(text)
        if family.name == "mlops_batch_size"
        for s in family.samples
        if s.name in ("mlops_batch_size_sum", "mlops_batch_size_count")
    }


def rows_per_call(before: dict, after: dict, model: str) -> float:
    def grew(name: str) -> float:
        return after.get((name, model), 0.0) - before.get((name, model), 0.0)

    calls = grew("mlops_batch_size_count")
    return grew("mlops_batch_size_sum") / calls if calls else 0.0


def measure(
    base: str,
    worker_metrics: str,
    iris_body: bytes,
    headers: dict,
    connections: int,
    seconds: float,
) -> dict:
    """Iris alone, then iris and penguins together, each at ``connections`` (sync waits)."""
    iris_url, penguins_url = f"{base}/predict?wait=10", f"{base}/models/penguins/predict?wait=10"
    penguins_body = penguin_body()
    run_load(penguins_url, penguins_body, headers, connections, 2)  # warm-up: load the model

    before = batch_totals(worker_metrics)
    alone = run_load(iris_url, iris_body, headers, connections, seconds)
    middle = batch_totals(worker_metrics)
    with ThreadPoolExecutor(2) as pool:
        iris = pool.submit(run_load, iris_url, iris_body, headers, connections, seconds)
        penguins = pool.submit(run_load, penguins_url, penguins_body, headers, connections, seconds)
        iris, penguins = iris.result(), penguins.result()
    after = batch_totals(worker_metrics)
    return {
        "connections_per_model": connections,
        "iris_alone": {**alone, "rows_per_call": rows_per_call(before, middle, "iris")},
        "iris_with_penguins": {**iris, "rows_per_call": rows_per_call(middle, after, "iris")},
        "penguins_with_iris": {
            **penguins,
            "rows_per_call": rows_per_call(middle, after, "penguins"),
        },
    }

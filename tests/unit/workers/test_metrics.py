"""Worker metrics: the class, its wiring (run_message, the model cache) and multiprocess mode.

Multiprocess mode changes prometheus-client for the whole process, so it is exercised in a
fresh interpreter that forks real children, the way Celery's prefork pool does.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from types import SimpleNamespace

import fakeredis
import numpy as np
import pytest
from loguru import logger
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from core.errors import NoProductionModel
from core.messages import job_key
from tests.integration.procs import ROOT
from workers import metrics as worker_metrics_module
from workers.jobs import run_message
from workers.metrics import RETRAIN_OUTCOMES, WorkerMetrics, start_metrics_server
from workers.model_cache import LoadedModel, ModelCache

FEATURES = ["a", "b"]


def samples(text: str | bytes) -> list[tuple[str, dict, float]]:
    text = text.decode() if isinstance(text, bytes) else text
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def total(found, name: str, **labels: str) -> float:
    return sum(v for n, lab, v in found if n == name and labels.items() <= lab.items())


def scrape(metrics: WorkerMetrics):
    return samples(generate_latest(metrics.registry))


def model(version: int, accuracy: float = 0.9, estimator=None) -> LoadedModel:
    metadata = SimpleNamespace(
        feature_names=FEATURES, classes=["x", "y"], metrics={"accuracy": accuracy}, name="iris"
    )
    return LoadedModel("iris", version, estimator, metadata, load_seconds=0.25)


# --- the class --------------------------------------------------------------------------


def test_batches_count_jobs_by_status_and_observe_size_and_duration():
    metrics = WorkerMetrics()
    metrics.batch_done(4, 1, 0.002)
    metrics.batch_done(2, 0, 0.001)
    metrics.batch_done(3, 3)  # no model: nothing was inferred
    found = scrape(metrics)
    assert total(found, "mlops_batches_total") == 3
    assert total(found, "mlops_predictions_total", status="success") == 5
    assert total(found, "mlops_predictions_total", status="failure") == 4
    assert total(found, "mlops_batch_size_count") == 3
    assert total(found, "mlops_batch_size_sum") == 9
    assert total(found, "mlops_batch_size_bucket", le="2.0") == 1
    assert total(found, "mlops_inference_duration_seconds_count") == 2
    assert total(found, "mlops_inference_duration_seconds_sum") == pytest.approx(0.003)
    assert all(name.startswith("mlops_") for name, _, _ in found)


def test_model_info_follows_the_served_version_and_metric():
    metrics = WorkerMetrics()
    metrics.model_loaded(model(1))
    metrics.model_served(model(1, accuracy=0.9))
    metrics.model_served(model(2, accuracy=0.95))
    found = scrape(metrics)
    assert total(found, "mlops_model_info", model="iris", version="1") == 0
    assert total(found, "mlops_model_info", model="iris", version="2") == 1
    assert total(found, "mlops_model_metric", metric="accuracy") == 0.95
    assert total(found, "mlops_model_load_duration_seconds_count") == 1
    assert total(found, "mlops_model_load_duration_seconds_sum") == 0.25
    metrics.model_served(None)  # the production alias was removed
    assert total(scrape(metrics), "mlops_model_info") == 0


def test_retrain_outcomes_are_counted_including_failures():
    metrics = WorkerMetrics()
    assert metrics.count_retrain(lambda: {"decision": "promoted"}) == {"decision": "promoted"}
    metrics.count_retrain(lambda: {"decision": "skipped"})
    metrics.count_retrain(lambda: {"decision": "rejected"})

    def broken() -> dict:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        metrics.count_retrain(broken)
    found = scrape(metrics)
    for outcome in RETRAIN_OUTCOMES:
        assert total(found, "mlops_retrains_total", outcome=outcome) == 1


def test_each_instance_has_its_own_registry():
    first, second = WorkerMetrics(), WorkerMetrics()
    first.batch_done(1, 0)
    assert total(scrape(second), "mlops_batches_total") == 0


# --- wiring -----------------------------------------------------------------------------


class Constant:
    """An estimator that answers "x" for every row."""

    def predict(self, matrix):
        return np.array(["x"] * len(matrix))


class FixedCache:
    def __init__(self, served: LoadedModel | None):
        self.served = served

    def current(self) -> LoadedModel:
        if self.served is None:
            raise NoProductionModel("no production version yet")
        return self.served


def predict_job(job_id: str, rows: list) -> dict:
    return {"job_id": job_id, "request_id": None, "rows": rows, "features": FEATURES}


def test_run_message_records_one_batch_with_its_failures():
    client = fakeredis.FakeRedis()
    metrics = WorkerMetrics()
    jobs = [predict_job("ok1", [[1, 2]]), predict_job("ok2", [[3, 4]]), predict_job("bad", [[1]])]
    summary = run_message(
        client,
        FixedCache(model(1, estimator=Constant())),
        jobs,
        task_id="t1",
        ttl=60,
        max_attempts=3,
        metrics=metrics,
    )
    assert summary["failed"] == 1
    found = scrape(metrics)
    assert total(found, "mlops_batches_total") == 1
    assert total(found, "mlops_batch_size_sum") == 3
    assert total(found, "mlops_predictions_total", status="success") == 2
    assert total(found, "mlops_predictions_total", status="failure") == 1
    assert total(found, "mlops_inference_duration_seconds_count") == 1


def test_run_message_without_a_model_counts_every_job_as_failed():
    metrics = WorkerMetrics()
    client = fakeredis.FakeRedis()
    run_message(
        client,
        FixedCache(None),
        [predict_job("a", [[1, 2]]), predict_job("b", [[1, 2]])],
        task_id="t2",
        ttl=60,
        max_attempts=3,
        metrics=metrics,
    )
    found = scrape(metrics)
    assert total(found, "mlops_predictions_total", status="failure") == 2
    assert total(found, "mlops_inference_duration_seconds_count") == 0
    # Metrics are a side channel: each job still got its failure result.
    assert json.loads(client.get(job_key("b")))["error"]["reason"] == "no_production_model"


class FakeStore:
    model_name = "iris"

    def __init__(self):
        self.production: int | None = 1
        self.token = 0

    def aliases_token(self):
        return self.token

    def production_version(self):
        return self.production


def test_model_cache_reports_every_switch_including_back_to_a_cached_version():
    store = FakeStore()
    cache = ModelCache(store, lambda version: (model(version).metadata, Constant()))
    loaded, served = [], []
    cache.on_load = lambda m: loaded.append(m.version)
    cache.on_serve = lambda m: served.append(m.version if m else None)
    cache.refresh()
    cache.refresh()  # nothing changed: no callback
    store.production, store.token = 2, 1
    cache.refresh()
    store.production, store.token = 1, 2  # rollback to a version still in memory
    cache.refresh()
    store.production, store.token = None, 3
    cache.refresh()
    assert loaded == [1, 2]
    assert served == [1, 2, 1, None]


# --- the node's exposition ----------------------------------------------------------------


def test_a_taken_port_is_logged_and_the_worker_goes_on(tmp_path, monkeypatch):
    monkeypatch.setitem(worker_metrics_module.MULTIPROC, "dir", tmp_path)
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(message.record["message"]), level="ERROR")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = SimpleNamespace(
            worker=SimpleNamespace(metrics_port=port, metrics_address="127.0.0.1")
        )
        try:
            assert start_metrics_server(settings) is None
        finally:
            logger.remove(sink)
    assert any(str(port) in line and "not served" in line for line in lines)


def test_port_zero_disables_the_server(tmp_path, monkeypatch):
    monkeypatch.setitem(worker_metrics_module.MULTIPROC, "dir", tmp_path)
    settings = SimpleNamespace(worker=SimpleNamespace(metrics_port=0, metrics_address="127.0.0.1"))
    assert start_metrics_server(settings) is None


PREFORK_SCRIPT = r"""
import json, multiprocessing, os, signal, sys
from pathlib import Path
from types import SimpleNamespace

path, mode = Path(sys.argv[1]), sys.argv[2]
if mode == "imported-early":
    import prometheus_client  # noqa: F401 - e.g. a library imported it before the signal
from workers import metrics as wm
from prometheus_client import generate_latest

path.mkdir(parents=True, exist_ok=True)
(path / "counter_999999.db").write_bytes(b"left by a previous run")
settings = SimpleNamespace(worker=SimpleNamespace(metrics_port=1, metrics_dir=str(path)))
wm.prepare_multiprocess(settings, "node@host")
model = SimpleNamespace(
    name="iris", version=1, load_seconds=0.5, metadata=SimpleNamespace(metrics={"accuracy": 0.9})
)

def child(ready, go):
    metrics = wm.worker_metrics()
    metrics.model_loaded(model)
    metrics.model_served(model)
    metrics.batch_done(3, 1, 0.01)
    ready.set()
    go.wait(60)
    wm.mark_child_dead(os.getpid())  # what the worker_process_shutdown signal does

ctx = multiprocessing.get_context("fork")
pairs = [(ctx.Event(), ctx.Event()) for _ in range(2)]
children = [ctx.Process(target=child, args=pair) for pair in pairs]
for process in children:
    process.start()
for ready, _ in pairs:
    assert ready.wait(60)
scrape = lambda: generate_latest(wm.node_registry(path)).decode()
out = {"both": scrape(), "pids": [p.pid for p in children]}
pairs[0][1].set()
children[0].join(60)
out["one"] = scrape()
os.kill(children[1].pid, signal.SIGKILL)  # the OOM killer: no shutdown signal runs
children[1].join(60)
out["none"] = scrape()
sys.stdout.write(json.dumps(out))
"""


@pytest.mark.parametrize("mode", ["normal", "imported-early"])
def test_prefork_children_are_summed_and_dead_ones_forgotten(tmp_path, mode):
    done = subprocess.run(
        [sys.executable, "-c", PREFORK_SCRIPT, str(tmp_path / "node"), mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    both, one, none = (samples(out[key]) for key in ("both", "one", "none"))
    first, second = (str(pid) for pid in out["pids"])

    def info_pids(found) -> set[str]:
        return {lab["pid"] for n, lab, v in found if n == "mlops_model_info" and v == 1}

    assert info_pids(both) == {first, second}
    assert info_pids(one) == {second}  # marked dead on its way out
    assert info_pids(none) == set()  # killed: swept at the scrape
    for found in (both, one, none):  # counters of dead children stay in the node's sums
        assert total(found, "mlops_batches_total") == 2
        assert total(found, "mlops_predictions_total", status="success") == 4
        assert total(found, "mlops_predictions_total", status="failure") == 2
        assert total(found, "mlops_model_load_duration_seconds_count") == 2
    assert total(both, "mlops_model_metric", metric="accuracy") == 0.9

"""Worker metrics: the class, the node's exposition and multiprocess mode. What run_message and
the model cache report is tested with them (test_batches.py, test_model_cache.py).

Multiprocess mode changes prometheus-client for the whole process, so it is exercised in a
fresh interpreter that forks real children, the way Celery's prefork pool does.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from loguru import logger

from scripts.processes import ROOT
from tests.factories import loaded_model, samples, stand_in_metadata, total, value
from workers import metrics as worker_metrics_module
from workers.metrics import (
    BATCH_ROWS_BUCKETS,
    BATCH_SIZE_BUCKETS,
    RETRAIN_OUTCOMES,
    WorkerMetrics,
    start_metrics_server,
)

# --- the class --------------------------------------------------------------------------


def test_batches_count_jobs_by_status_and_observe_size_and_duration():
    metrics = WorkerMetrics()
    metrics.batch_done("iris", 4, 1, 0.002, rows=40)
    metrics.batch_done("iris", 2, 0, 0.001, rows=2)
    metrics.batch_done("iris", 3, 3)  # no model: nothing was inferred
    metrics.batch_done("penguins", 7, 0, 0.001)
    found = samples(metrics.registry)
    assert total(found, "mlops_batches_total", model="iris") == 3
    assert total(found, "mlops_predictions_total", model="iris", status="success") == 5
    assert total(found, "mlops_predictions_total", model="iris", status="failure") == 4
    assert total(found, "mlops_predictions_total", model="penguins", status="success") == 7
    assert total(found, "mlops_batch_size_sum", model="penguins") == 7
    found = [sample for sample in found if sample[1].get("model") != "penguins"]
    assert total(found, "mlops_batch_size_count") == 3
    assert total(found, "mlops_batch_size_sum") == 9
    assert total(found, "mlops_batch_size_bucket", le="2.5") == 1
    # Rows per scikit-learn call: only the batches that made one.
    assert total(found, "mlops_batch_rows_count") == 2
    assert total(found, "mlops_batch_rows_sum") == 42
    assert total(found, "mlops_batch_rows_bucket", le="2.5") == 1
    assert total(found, "mlops_inference_duration_seconds_count") == 2
    assert total(found, "mlops_inference_duration_seconds_sum") == pytest.approx(0.003)
    assert all(name.startswith("mlops_") for name, _, _ in found)


def test_model_info_follows_the_served_version_and_metric():
    metrics = WorkerMetrics()
    metrics.model_loaded(loaded_model(1, load_seconds=0.25))
    metrics.model_served("iris", loaded_model(1, meta=stand_in_metadata(accuracy=0.9)))
    metrics.model_served("iris", loaded_model(2, meta=stand_in_metadata(accuracy=0.95)))
    other = loaded_model(5, meta=stand_in_metadata(accuracy=0.7))
    metrics.model_served("penguins", other)
    found = samples(metrics.registry)
    assert total(found, "mlops_model_info", model="iris", version="1") == 0
    assert total(found, "mlops_model_info", model="iris", version="2") == 1
    assert total(found, "mlops_model_info", model="penguins", version="5") == 1
    assert total(found, "mlops_model_metric", model="iris", metric="accuracy") == 0.95
    assert total(found, "mlops_model_metric", model="penguins", metric="accuracy") == 0.7
    assert total(found, "mlops_model_load_duration_seconds_count", model="iris") == 1
    assert total(found, "mlops_model_load_duration_seconds_sum", model="iris") == 0.25
    metrics.model_served("iris", None)  # the production alias was removed
    found = samples(metrics.registry)
    assert total(found, "mlops_model_info", model="iris") == 0
    assert total(found, "mlops_model_info", model="penguins") == 1  # another model's stays


def test_bucket_bounds_lie_between_whole_numbers():
    """A p50 of batches of one reads 1.0 (not 0.5): histogram_quantile interpolates inside
    (0.5, 1.5], the bucket that holds them."""
    for bounds in (BATCH_SIZE_BUCKETS, BATCH_ROWS_BUCKETS):
        assert all(bound % 1 == 0.5 for bound in bounds)
        assert list(bounds) == sorted(bounds)


def test_a_trainer_declares_every_retrain_series_at_zero():
    metrics = WorkerMetrics()
    metrics.declare_models(["iris", "penguins"])
    found = samples(metrics.registry)
    for model in ("iris", "penguins"):
        for outcome in RETRAIN_OUTCOMES:
            assert value(found, "mlops_retrains_total", model=model, outcome=outcome) == 0
    assert total(found, "mlops_retrain_last_run_timestamp_seconds") == 0  # none ran


def test_retrain_outcomes_are_counted_including_failures():
    metrics = WorkerMetrics()
    before = time.time()
    promoted = metrics.count_retrain("iris", lambda: {"decision": "promoted"})
    assert promoted == {"decision": "promoted"}
    metrics.count_retrain("iris", lambda: {"decision": "skipped"})
    metrics.count_retrain("iris", lambda: {"decision": "rejected"})
    metrics.count_retrain("penguins", lambda: {"decision": "promoted"})

    def broken() -> dict:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        metrics.count_retrain("iris", broken)
    found = samples(metrics.registry)
    for outcome in RETRAIN_OUTCOMES:
        assert total(found, "mlops_retrains_total", model="iris", outcome=outcome) == 1
    assert total(found, "mlops_retrains_total", model="penguins", outcome="promoted") == 1
    last_run = total(found, "mlops_retrain_last_run_timestamp_seconds", model="iris")
    assert before <= last_run <= time.time()


def test_each_instance_has_its_own_registry():
    first, second = WorkerMetrics(), WorkerMetrics()
    first.batch_done("iris", 1, 0)
    assert total(samples(second.registry), "mlops_batches_total") == 0


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
    metrics.model_served("iris", model)
    metrics.batch_done("iris", 3, 1, 0.01, 30)
    metrics.retrain_finished("iris", "promoted")
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
        assert total(found, "mlops_batch_rows_sum") == 60
        assert total(found, "mlops_retrain_last_run_timestamp_seconds") > 0  # max, kept
        # The main process's own process metrics (it serves the node's exposition).
        assert total(found, "process_resident_memory_bytes") > 0
        assert total(found, "process_open_fds") > 0
    assert total(both, "mlops_model_metric", metric="accuracy") == 0.9

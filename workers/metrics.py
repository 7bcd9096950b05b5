"""The workers' Prometheus metrics, correct under Celery's prefork pool.

Tasks run in child processes, but one port per node must answer Prometheus. So
prometheus-client runs in multiprocess mode: each child writes its values to memory-mapped
files in one folder per worker node, and the main process serves their sum on
``worker.metrics_port``. prometheus-client chooses file or memory storage when it is first
imported, from ``PROMETHEUS_MULTIPROC_DIR``: this module therefore imports it only inside
functions, and :func:`prepare_multiprocess` runs in the main process before the pool forks.

Recording happens once per batch, never per job. :class:`WorkerMetrics` owns its registry,
so tests build a fresh one and nothing is registered globally.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from loguru import logger

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from core.settings import Settings
    from workers.model_cache import LoadedModel

RETRAIN_OUTCOMES = ("promoted", "rejected", "failed", "skipped")
# Counts are whole numbers: bounds between them, so that histogram_quantile's interpolation
# inside a bucket stays within it (with bounds 1, 2, 4... a batch of 1 lay in (0, 1] and the
# p50 of all-ones batches read 0.5).
BATCH_SIZE_BUCKETS = (1.5, 2.5, 4.5, 8.5, 16.5, 32.5, 64.5, 128.5, 256.5, 512.5, 1024.5)
BATCH_ROWS_BUCKETS = (*BATCH_SIZE_BUCKETS, 2048.5, 4096.5, 16384.5, 65536.5, 262144.5)
INFERENCE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
LOAD_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The folder this node's processes write to, once prepare_multiprocess ran (main process).
MULTIPROC = {"dir": None}


class WorkerMetrics:
    """Every metric a worker process records, in its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.predictions = Counter(
            "mlops_predictions_total",
            "Predict jobs answered, by model and status (success or failure).",
            ("model", "status"),
            registry=r,
        )
        self.batches = Counter(
            "mlops_batches_total", "Predict messages (batches of jobs) run.", ("model",), registry=r
        )
        self.batch_size = Histogram(
            "mlops_batch_size",
            "Predict jobs per message (one /predict request is one job, of one or more rows).",
            ("model",),
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.batch_rows = Histogram(
            "mlops_batch_rows",
            "Rows per scikit-learn call: every row of a message's live jobs, predicted at once.",
            ("model",),
            buckets=BATCH_ROWS_BUCKETS,
            registry=r,
        )
        self.inference_duration = Histogram(
            "mlops_inference_duration_seconds",
            "Time to predict one batch (all its jobs in one scikit-learn call).",
            ("model",),
            buckets=INFERENCE_BUCKETS,
            registry=r,
        )
        self.model_load_duration = Histogram(
            "mlops_model_load_duration_seconds",
            "Time to load and verify one model version from the store.",
            ("model",),
            buckets=LOAD_BUCKETS,
            registry=r,
        )
        # One series per live process (pid label): sum by (version) counts the processes
        # serving each version, and a dead child's series disappears.
        self.model_info = Gauge(
            "mlops_model_info",
            "1 for the model version this worker process serves.",
            ("model", "version"),
            multiprocess_mode="liveall",
            registry=r,
        )
        self.model_metric = Gauge(
            "mlops_model_metric",
            "Evaluation metrics of each served production model, from its metadata.",
            ("model", "metric"),
            multiprocess_mode="livemostrecent",
            registry=r,
        )
        self.trace_spans_dropped = Counter(
            "mlops_trace_spans_dropped_total",
            "Trace spans lost: the OTLP export failed or timed out, or its queue was full.",
            registry=r,
        )
        self.retrains = Counter(
            "mlops_retrains_total",
            "Retrain runs finished, by model and outcome (promoted, rejected, failed, skipped).",
            ("model", "outcome"),
            registry=r,
        )
        # max across the node's processes; wiped with the node's files when the worker restarts.
        self.retrain_last_run = Gauge(
            "mlops_retrain_last_run_timestamp_seconds",
            "Unix time the last retrain run of each model finished, whatever its outcome.",
            ("model",),
            multiprocess_mode="max",
            registry=r,
        )
        self._per_model: dict[str, _ModelSeries] = {}
        self._served: dict[str, str] = {}  # model -> the version this process serves

    def _series(self, model: str) -> _ModelSeries:
        """One model's labelled children, made once: .labels() per batch costs a dict lookup
        and a lock more than keeping them."""
        series = self._per_model.get(model)
        if series is None:
            series = self._per_model[model] = _ModelSeries(self, model)
        return series

    def declare_models(self, models) -> None:
        """Every retrain series of ``models`` at 0 from the start, so that increase() sees a
        process's first failure (a series born at 1 shows no increase)."""
        for model in models:
            for outcome in RETRAIN_OUTCOMES:
                self.retrains.labels(model, outcome)

    def batch_done(
        self,
        model: str,
        jobs: int,
        failed: int,
        inference_seconds: float | None = None,
        rows: int = 0,
    ) -> None:
        """One predict message of ``model`` finished: ``jobs`` answered, ``failed`` of them
        with an error; ``rows`` went through one scikit-learn call in ``inference_seconds``."""
        series = self._series(model)
        series.batches.inc()
        series.batch_size.observe(jobs)
        if jobs > failed:
            series.succeeded.inc(jobs - failed)
        if failed:
            series.failed.inc(failed)
        if inference_seconds is not None:
            series.inference.observe(inference_seconds)
            series.rows.observe(rows)

    def model_loaded(self, model: LoadedModel) -> None:
        self.model_load_duration.labels(model.name).observe(model.load_seconds)

    def model_served(self, name: str, model: LoadedModel | None) -> None:
        """The process now serves ``model`` as model ``name``'s production (None: none)."""
        version = str(model.version) if model is not None else None
        previous = self._served.pop(name, None)
        if previous is not None and previous != version:
            # Set to 0, not removed: a removed child's value stays in the multiprocess file.
            self.model_info.labels(name, previous).set(0)
        if model is None:
            return
        self._served[name] = version
        self.model_info.labels(name, version).set(1)
        for metric, value in model.metadata.metrics.items():
            self.model_metric.labels(name, metric).set(value)

    def count_retrain(self, model: str, run: Callable[[], dict]) -> dict:
        """Run a retrain of ``model`` and count its outcome: its ``decision``; if it raised,
        the exception's ``outcome`` attribute, else ``failed``."""
        try:
            result = run()
        except Exception as exc:
            self.retrain_finished(model, getattr(exc, "outcome", "failed"))
            raise
        self.retrain_finished(model, str(result.get("decision")))
        return result

    def retrain_finished(self, model: str, outcome: str) -> None:
        if outcome not in RETRAIN_OUTCOMES:
            logger.warning("unknown retrain outcome {!r}: counted as failed", outcome)
            outcome = "failed"
        self.retrains.labels(model, outcome).inc()
        self.retrain_last_run.labels(model).set(time.time())


class _ModelSeries:
    """The per-batch series of one model."""

    def __init__(self, metrics: WorkerMetrics, model: str):
        self.succeeded = metrics.predictions.labels(model, "success")
        self.failed = metrics.predictions.labels(model, "failure")
        self.batches = metrics.batches.labels(model)
        self.batch_size = metrics.batch_size.labels(model)
        self.rows = metrics.batch_rows.labels(model)
        self.inference = metrics.inference_duration.labels(model)


@functools.cache
def worker_metrics() -> WorkerMetrics:
    """This process's metrics, built on first use (after the fork in a prefork child)."""
    return WorkerMetrics()


# --- the node's exposition, in the worker's main process ----------------------------------


def metrics_dir(settings: Settings, node: str) -> Path:
    """``worker.metrics_dir``, or one folder per worker node under the system temp dir."""
    if settings.worker.metrics_dir:
        return Path(settings.worker.metrics_dir)
    safe_node = re.sub(r"[^A-Za-z0-9@._-]", "_", node) or "worker"
    return Path(tempfile.gettempdir()) / "mlops-worker-metrics" / safe_node


def prepare_multiprocess(settings: Settings, node: str) -> Path | None:
    """Main process, before the pool forks: wipe the node's folder and turn multiprocess on.

    Nothing to do when the metrics port is 0: children then keep their values in memory.
    """
    if not settings.worker.metrics_port:
        return None
    path = metrics_dir(settings, node)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):  # a previous run's counters would be added to ours
        stale.unlink(missing_ok=True)
    # prometheus-client reads this variable itself, at import; it is not a setting of ours,
    # and the prefork children inherit it with the rest of the environment.
    os.environ[MULTIPROC_ENV] = str(path)
    if "prometheus_client" in sys.modules:  # imported too early: switch its storage now
        from prometheus_client import values

        values.ValueClass = values.get_value_class()
    MULTIPROC["dir"] = path
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def node_registry(path: Path) -> CollectorRegistry:
    """A registry that sums the node's process files, forgetting processes that died.

    A child killed by SIGKILL or the OOM killer never runs its shutdown signal, so dead pids'
    live gauges are swept at each scrape as well. process_* and python_info are the main
    process's own (the one serving this): a pool child's memory is not in them.
    """
    from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
    from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

    class LiveProcessesCollector(MultiProcessCollector):
        def collect(self):
            for file in Path(path).glob("gauge_live*_*.db"):
                with contextlib.suppress(ValueError):
                    pid = int(file.stem.rsplit("_", 1)[1])
                    if not _pid_alive(pid):
                        mark_process_dead(pid, str(path))
            return super().collect()

    registry = CollectorRegistry()
    LiveProcessesCollector(registry, path=str(path))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def start_metrics_server(settings: Settings):
    """Serve the node's metrics on ``worker.metrics_address:metrics_port``; None if off or taken.

    A taken port is logged, not fatal: a worker that predicts without metrics beats no worker.
    """
    port, address = settings.worker.metrics_port, settings.worker.metrics_address
    path = MULTIPROC["dir"]
    if not port or path is None:
        return None
    from prometheus_client import start_http_server

    try:
        server, _thread = start_http_server(port, addr=address, registry=node_registry(path))
    except OSError as exc:
        logger.error("worker metrics not served: cannot listen on {}:{}: {}", address, port, exc)
        return None
    logger.info("worker metrics on http://{}:{}/metrics", address, port)
    return server


def mark_child_dead(pid: int) -> None:
    """A pool child exits: drop its live gauges (its counters stay in the node's sums)."""
    if MULTIPROC["dir"] is not None:  # set in the main process before the fork
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(pid, str(MULTIPROC["dir"]))

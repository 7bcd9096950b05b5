"""What several test modules build or read, defined once.

Builders: iris rows, a predict job as the gateway queues it, model metadata, a model store with
this session's signing keys, loaded models and the worker's model cache, settings from an
environment, the environment of a service subprocess. Readers: a Celery message's body, a
Prometheus exposition. Fixtures stay in the conftest.py files; what someone with write access
to the artifacts folder can do to a version is in tests/attacker.py.

Workers and training pieces are imported inside the functions that need them, so a gateway
test that imports this module does not load scikit-learn or build the Celery app.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import httpx
import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from core.settings import get_settings, reset_settings
from core.signing import SigningKeys
from core.store import FeatureSpec, LocalStorage, ModelMetadata, ModelStore
from scripts.processes import ROOT, child_env

# -- rows and jobs ----------------------------------------------------------------------------

SETOSA = [5.1, 3.5, 1.4, 0.2]
VERSICOLOR = [5.9, 2.8, 4.3, 1.3]
VIRGINICA = [6.9, 3.1, 5.4, 2.1]


def predict_job(
    job_id: str, rows: int | list[list] = 1, features: list[str] | None = None, **fields
) -> dict:
    """A predict job as the gateway queues it (app/services/inference.py): ``rows`` setosa
    rows, or the rows given; request id ``req-<job_id>``; no deadline unless ``expires_at``."""
    return {
        "job_id": job_id,
        "request_id": f"req-{job_id}",
        "rows": [SETOSA] * rows if isinstance(rows, int) else rows,
        "features": features,
        "expires_at": None,
        **fields,
    }


def decode_message(payload: bytes) -> tuple[dict, list]:
    """``(envelope, [args, kwargs, embed])`` of a Celery message the gateway wrote (protocol 2:
    a JSON body, as text)."""
    envelope = orjson.loads(payload)
    assert "body_encoding" not in envelope["properties"]
    return envelope, orjson.loads(envelope["body"])


# -- model versions ---------------------------------------------------------------------------


def metadata(features=("a", "b"), fmt: str = "joblib", **changes) -> ModelMetadata:
    """A version's metadata as training writes it (before the store numbers and signs it),
    with the features named in ``features``, an artifact in format ``fmt``, and ``changes``."""
    fields = {
        "name": "m",
        "trainer": "iris",
        "metrics": {"accuracy": 0.9},
        "features": [FeatureSpec(name=name) for name in features],
        "classes": ["x", "y"],
        "data_fingerprint": "0" * 64,
        "trained_at": "2024-01-01T00:00:00+00:00",
        "python_version": "3.11",
        "sklearn_version": "1.0",
        "joblib_version": "1.0",
        "artifact_file": f"model.{fmt}",
        "artifact_format": fmt,
    }
    return ModelMetadata(**{**fields, **changes})


def store_at(
    root: Path,
    model: str = "iris",
    artifact_format: str | None = None,
    keys: SigningKeys | None = None,
) -> ModelStore:
    """The store a process configured like the tests opens on ``root`` (this session's signing
    keys unless ``keys``; the configured artifact format unless ``artifact_format``)."""
    settings = get_settings()
    fmt = artifact_format or str(settings.training.artifact_format)
    keys = keys or SigningKeys.from_settings(settings)
    return ModelStore(LocalStorage(Path(root)), model, keys, fmt)


def s3_env(endpoint: str, bucket: str) -> dict[str, str]:
    """A service's settings for the model store ``s3://<bucket>/models`` on the test S3 server
    at ``endpoint`` (tests/s3_server.py)."""
    return {
        "MLOPS_ARTIFACTS_URL": f"s3://{bucket}/models",
        "MLOPS_OBJECT_STORE__ENDPOINT_URL": endpoint,
        "MLOPS_OBJECT_STORE__REGION": "us-east-1",
        "MLOPS_OBJECT_STORE__ACCESS_KEY_ID": "testing",
        "MLOPS_OBJECT_STORE__SECRET_ACCESS_KEY": "testing",
    }


def s3_store(endpoint: str, url: str, model: str = "iris", cache: Path | None = None) -> ModelStore:
    """The store of ``model`` at ``url`` (s3://bucket/prefix) on the test S3 server, with this
    session's signing keys and, if given, an artifact cache folder."""
    from core.artifact_cache import ArtifactCache
    from core.object_store import S3Storage
    from core.settings import ObjectStoreSettings

    settings = get_settings()
    options = ObjectStoreSettings(
        endpoint_url=endpoint,
        region="us-east-1",
        access_key_id="testing",
        secret_access_key="testing",
        cache_dir=str(cache or ""),
    )
    return ModelStore(
        S3Storage(url, options),
        model,
        SigningKeys.from_settings(settings),
        str(settings.training.artifact_format),
        ArtifactCache(cache) if cache else None,
    )


def serving_cache(store: ModelStore, settings=None):
    """The worker's model cache on ``store`` with the real loader (integrity, versions)."""
    from training.serialization import load_model
    from workers.model_cache import ModelCache

    settings = settings or get_settings()
    return ModelCache(store, lambda version: load_model(store, version, settings))


def stand_in_metadata(accuracy: float = 0.9, name: str = "iris") -> SimpleNamespace:
    """The part of a version's metadata the worker reads: features a and b, classes x and y."""
    return SimpleNamespace(
        name=name, feature_names=["a", "b"], classes=["x", "y"], metrics={"accuracy": accuracy}
    )


def loaded_model(
    version: int = 1, estimator=None, meta=None, name: str = "iris", load_seconds: float = 0.0
):
    """A model as the worker's cache hands it out: ``estimator`` (or none) and ``meta`` (or
    :func:`stand_in_metadata`)."""
    from workers.model_cache import LoadedModel

    meta = stand_in_metadata(name=name) if meta is None else meta
    return LoadedModel(name, version, estimator, meta, load_seconds)


class Constant:
    """An estimator that answers "x" for every row."""

    def predict(self, matrix):
        import numpy as np

        return np.array(["x"] * len(matrix))


def open_admission():
    """Admission that never refuses: for tests about grouping or waiting, not backpressure."""
    from app.services.admission import Admission

    return Admission(
        max_queue_depth=10**9, max_queue_bytes=10**12, memory_backpressure=0.8, retry_after=1
    )


# -- the prediction log ------------------------------------------------------------------------


def log_predictions(
    client, model: str, version: int, rows: list[list[float]], outputs: list | None = None
) -> str:
    """One predict job of ``rows`` in ``model``'s prediction log, as a worker writes it (one
    message of one job); its job id. ``outputs`` None: one "setosa" per row."""
    from core.prediction_log import append

    job = f"job-{os.urandom(4).hex()}"
    outputs = ["setosa"] * len(rows) if outputs is None else outputs
    append(client, model, version, 1.7e9, [(job, f"req-{job}", "", rows, outputs)], 10_000)
    return job


# -- settings and environments ----------------------------------------------------------------


def settings_with(monkeypatch, **env):
    """The settings after setting ``env`` (``TRAINING__PROMOTION_MARGIN=0.5`` or the full
    variable name ``MLOPS_TRAINING__PROMOTION_MARGIN``)."""
    for key, value in env.items():
        monkeypatch.setenv(key if key.startswith("MLOPS_") else f"MLOPS_{key}", str(value))
    reset_settings()
    return get_settings()


def signing_env() -> dict[str, str]:
    """This test session's signing keys (tests/conftest.py), for a subprocess."""
    return {k: v for k, v in os.environ.items() if k.startswith("MLOPS_SIGNING__")}


def service_env(redis_url: str, artifacts_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for a service subprocess: testing settings against ``redis_url``, and this
    session's signing keys."""
    settings = {
        **signing_env(),
        "MLOPS_ENV": "testing",
        "MLOPS_REDIS_URL": redis_url,
        "MLOPS_ARTIFACTS_DIR": str(artifacts_dir),
    }
    return child_env(inherit_settings=False, **{**settings, **extra})


# -- running and reading ----------------------------------------------------------------------


def run(coro, timeout: float = 30):
    """Run a coroutine to its end on a new event loop; a hang fails after ``timeout`` s."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def samples(exposition: bytes | str | CollectorRegistry) -> list[tuple[str, dict, float]]:
    """``(name, labels, value)`` of every sample in a Prometheus text exposition (or in the
    exposition of a registry)."""
    if isinstance(exposition, CollectorRegistry):
        exposition = generate_latest(exposition)
    text = exposition.decode() if isinstance(exposition, bytes) else exposition
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def scrape(url: str) -> list[tuple[str, dict, float]]:
    """The samples a GET of ``url`` (a /metrics endpoint) answers."""
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text
    return samples(response.text)


def value(found, name: str, **labels: str) -> float | None:
    """The sample named ``name`` with exactly ``labels``, or None if absent."""
    matches = [v for n, lab, v in found if n == name and lab == labels]
    assert len(matches) <= 1
    return matches[0] if matches else None


def total(found, name: str, **labels: str) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels``."""
    return sum(v for n, lab, v in found if n == name and labels.items() <= lab.items())


# -- tracing ----------------------------------------------------------------------------------


def memory_tracer(service: str = "test", sampling_ratio: float = 1.0):
    """A core.otel.Tracer whose spans end up in an InMemorySpanExporter, and that exporter;
    ``finished(tracer, exporter)`` flushes the background processor and reads them."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from core.otel import Tracer

    exporter = InMemorySpanExporter()
    return Tracer.exporting(exporter, service, sampling_ratio=sampling_ratio), exporter


def finished(tracer, exporter) -> dict:
    """The spans ended so far, by name (each name once in these tests)."""
    assert tracer.provider.force_flush(5000)
    spans = exporter.get_finished_spans()
    by_name = {span.name: span for span in spans}
    assert len(by_name) == len(spans), [span.name for span in spans]
    return by_name


def fresh_interpreter(code: str) -> str:
    """What ``code`` writes to stdout in a new Python process with the testing settings and
    nothing else of this environment: what importing a module does, on its own."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={"MLOPS_ENV": "testing", "PATH": ""},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


# -- the prediction log and feedback (core/prediction_log.py, core/feedback.py) -----------------


def log_prediction(client, job: str, rows, outputs, *, model="iris", version=1, owner="o",
                   request="", at=100.0) -> None:  # fmt: skip
    """Append one predict job to ``model``'s prediction log, as a worker does."""
    from core.prediction_log import append

    append(client, model, version, at, [(job, request, owner, rows, outputs)], 10_000)


def label_prediction(client, job: str, label, *, model="iris", at=200.0) -> list:
    """Record ``label`` for the logged ``job``, as POST /feedback does after its checks (the
    label as stored: a list for a job of several rows). RECORD's reply."""
    from core.feedback import decode_resolved, record_args, resolve_args

    [entry] = decode_resolved(client.eval(*resolve_args(model, [("j", job, "")])))
    assert entry is not None, f"{job} is not in the prediction log"
    return client.eval(*record_args(model, [{**entry, "label": label}], 10**6, 500, at))

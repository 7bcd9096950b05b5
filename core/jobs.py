"""The job record: what a predict or train job is, wherever it is read or written.

Every job, predict or train, has one record under :func:`job_key` for ``api.jobs_ttl_seconds``.
The gateway writes it ``PENDING`` when it queues the job (app/services/submitter.py; a retrain:
core/single_flight.py), a worker replaces it with the job's result (workers/batches.py,
workers/retrain.py; a CLI training run: training/single_flight.py), and ``GET /jobs/{id}``
shows it (app/services/job_status.py) in the shape of :class:`JobPublic`. A finished record
(:data:`FINISHED`) is final.

Records are plain dicts, described by :class:`JobRecord` and built only by the constructors
below: the worker builds one per predict job and the gateway one per request, on the most
measured paths of the project. A PENDING record built and encoded costs 0.6 µs as a dict
(0.07 µs of it the call to its constructor), 5.3 µs as a pydantic model (measured on the
2-core machine); the pydantic models here describe the public answers for the OpenAPI docs.
"""

# No ``from __future__ import annotations`` here: TypedDict sees ``Required`` only in
# evaluated annotations.
import time
from collections.abc import Mapping
from typing import Any, Literal, Required, TypedDict

import orjson
from pydantic import BaseModel, ConfigDict

from core.versions import API_VERSION

JobStatus = Literal["PENDING", "STARTED", "SUCCESS", "FAILURE"]
JobKind = Literal["predict", "train"]

PENDING: JobStatus = "PENDING"
STARTED: JobStatus = "STARTED"
SUCCESS: JobStatus = "SUCCESS"
FAILURE: JobStatus = "FAILURE"
FINISHED = frozenset({SUCCESS, FAILURE})
"""The final statuses: a record that has one is the job's answer."""

PREDICT: JobKind = "predict"
TRAIN: JobKind = "train"


class ErrorRecord(TypedDict):
    reason: str  # e.g. expired, schema_mismatch, worker_lost, time_limit (README: GET /jobs)
    message: str


class JobRecord(TypedDict, total=False):
    """A job's record as stored (JSON) under :func:`job_key`."""

    job_id: Required[str]
    kind: Required[JobKind]
    status: Required[JobStatus]
    owner: str | None  # digest of the API key that created it; None: admin keys only
    submitted_at: float
    completed_at: float
    error: ErrorRecord  # FAILURE
    # predict
    request_id: str | None  # the client's, echoed
    task_id: str  # the Celery message carrying the job (PENDING)
    queue: str  # the Celery queue of that message, when not the default predict queue
    model_name: str
    model_version: int
    api_version: str
    predictions: list[Any]  # SUCCESS, one per row
    probabilities: list[list[float]]  # SUCCESS, when the model has predict_proba
    classes: list[Any]
    # train
    requested_by: str  # "api key <fingerprint>", "beat", "cli"...
    result: dict[str, Any]  # SUCCESS: the training outcome (version, decision, metrics)


# -- Redis keys --------------------------------------------------------------------------------
def job_key(job_id: str) -> str:
    """Redis key of a job's record; expires with the job."""
    return f"mlops:job:{job_id}"


def batch_key(task_id: str) -> str:
    """Redis key set while the Celery task carrying a group of predict jobs runs."""
    return f"mlops:batch:{task_id}"


def attempts_key(ident: str) -> str:
    """Redis key counting the deliveries of a message or job: crash-loop protection."""
    return f"mlops:attempts:{ident}"


# -- reading -----------------------------------------------------------------------------------
def decode_record(raw: bytes | str | None) -> JobRecord | None:
    """A record as read from Redis (None: no such key)."""
    return orjson.loads(raw) if raw else None


def is_finished(record: Mapping[str, Any] | None) -> bool:
    return record is not None and record.get("status") in FINISHED


# -- constructors ------------------------------------------------------------------------------
def job_error(reason: str, message: str) -> ErrorRecord:
    return {"reason": reason, "message": message}


def pending_predict(
    job: Mapping[str, Any], task_id: str, submitted_at: float, queue: str | None = None
) -> JobRecord:
    """The record the gateway writes with the message carrying ``job`` (a message's item),
    queued on ``queue`` (None: the default predict queue, not written)."""
    record: JobRecord = {
        "job_id": job["job_id"],
        "kind": PREDICT,
        "status": PENDING,
        "request_id": job.get("request_id"),
        "owner": job.get("owner"),
        "model_name": job.get("model"),
        "task_id": task_id,
        "submitted_at": submitted_at,
    }
    if queue is not None:
        record["queue"] = queue
    return record


def predict_success(
    job: Mapping[str, Any],
    model_name: str,
    model_version: int,
    predictions: list[Any],
    probabilities: list[list[float]] | None,
    classes: list[Any],
) -> JobRecord:
    """A predict job's answer; ``owner`` is kept so that only its API key reads it."""
    record: JobRecord = {
        "job_id": job["job_id"],
        "kind": PREDICT,
        "status": SUCCESS,
        "request_id": job.get("request_id"),
        "owner": job.get("owner"),
        "model_name": model_name,
        "model_version": model_version,
        "api_version": API_VERSION,
        "predictions": predictions,
        "completed_at": time.time(),
    }
    if probabilities is not None:
        record["probabilities"] = probabilities
        record["classes"] = classes
    return record


def predict_failure(
    job: Mapping[str, Any],
    reason: str,
    message: str,
    model_name: str | None = None,
    model_version: int | None = None,
) -> JobRecord:
    """A predict job that ended without predictions; the model, when one was involved."""
    record: JobRecord = {
        "job_id": job["job_id"],
        "kind": PREDICT,
        "status": FAILURE,
        "request_id": job.get("request_id"),
        "owner": job.get("owner"),
        "error": job_error(reason, message),
        "api_version": API_VERSION,
        "completed_at": time.time(),
    }
    if model_name is not None:
        record["model_name"] = model_name
        record["model_version"] = model_version
    return record


def train_record(job_id: str, status: JobStatus, **fields: Any) -> JobRecord:
    """The record of a training run (``requested_by``, ``owner``, ``result``, ``error``...)."""
    return {"job_id": job_id, "kind": TRAIN, "status": status, **fields}


def train_failure(
    job_id: str, reason: str, message: str, record: Mapping[str, Any] | None = None
) -> JobRecord:
    """A training run given up: its ``record`` so far (who asked, when), now FAILURE."""
    return {
        **train_record(job_id, FAILURE),
        **(record or {}),
        "status": FAILURE,
        "error": job_error(reason, message),
        "completed_at": time.time(),
    }


def accepted_body(
    job_id: str,
    request_id: str | None = None,
    *,
    kind: JobKind = PREDICT,
    deduplicated: bool = False,
) -> dict[str, Any]:
    """The 202 body of a job queued (or joined: ``deduplicated``), in :class:`JobAccepted`'s
    shape: a predict job's echoes its ``request_id``, a retrain's says its ``kind``;
    ``location`` is where GET /jobs reads it."""
    location = f"/jobs/{job_id}"
    if kind == PREDICT:
        body = {"job_id": job_id, "status": PENDING, "request_id": request_id, "location": location}
    else:
        body = {"job_id": job_id, "status": PENDING, "kind": kind, "location": location}
    if deduplicated:
        body["deduplicated"] = True
    return body


# -- public shape (the OpenAPI description of GET /jobs/{id} and of the 202) -------------------
class JobError(BaseModel):
    reason: str
    message: str


class JobPublic(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())

    job_id: str
    status: JobStatus
    request_id: str | None = None
    kind: str | None = None
    model_name: str | None = None
    model_version: int | None = None
    api_version: str | None = None
    predictions: list[Any] | None = None
    probabilities: list[list[float]] | None = None
    classes: list[Any] | None = None
    error: JobError | None = None
    progress: dict[str, Any] | None = None
    result: dict[str, Any] | None = None


class JobAccepted(BaseModel):
    job_id: str
    status: JobStatus
    request_id: str | None = None
    kind: str | None = None
    location: str
    deduplicated: bool = False

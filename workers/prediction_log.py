"""What a worker logs of a predict message (core/prediction_log.py): the answered jobs, sampled.

One log entry per message, holding its logged jobs. It goes to Redis in the pipeline that
publishes the message's results (workers/batches.py ``publish``): no round trip of its own,
and no Redis call at all for a message whose jobs are all sampled out.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from core.jobs import SUCCESS
from core.prediction_log import append_args
from core.settings import Settings
from workers.model_cache import LoadedModel


@dataclass(frozen=True)
class LogBatch:
    """The logged jobs of one message, ready for :func:`core.prediction_log.append_args`."""

    model: str
    version: int
    at: float
    jobs: list[tuple]
    max_entries: int

    def eval_args(self) -> tuple:
        return append_args(self.model, self.version, self.at, self.jobs, self.max_entries)


def _in_model_order(model: LoadedModel, job: dict) -> list:
    """The job's rows with their columns in the model's feature order (the gateway sends them
    so; a producer that names its own order is reordered like the prediction was)."""
    rows = job.get("rows") or []
    features = job.get("features")
    if features is None or features == model.feature_names:
        return rows
    position = {name: i for i, name in enumerate(features)}
    order = [position[name] for name in model.feature_names]
    return [[row[i] for i in order] for row in rows]


def log_batch(
    settings: Settings,
    model: LoadedModel,
    jobs: list[dict],
    results: list[dict],
    draw: Callable[[], float] = random.random,
) -> LogBatch | None:
    """The log entry for ``results`` (one per job of ``jobs``, in order): the successful jobs,
    each kept with probability ``sample_ratio``; None when logging is off or nothing is kept."""
    policy = settings.prediction_log_of(model.name)
    if not policy.enabled or policy.sample_ratio <= 0:
        return None
    everything = policy.sample_ratio >= 1
    kept = [
        (job, result)
        for job, result in zip(jobs, results, strict=True)
        if result["status"] == SUCCESS and (everything or draw() < policy.sample_ratio)
    ]
    if not kept:
        return None
    logged = [
        (
            job["job_id"],
            job.get("request_id"),
            job.get("owner"),
            _in_model_order(model, job),
            result["predictions"],
        )
        for job, result in kept
    ]
    at = kept[0][1].get("completed_at", 0.0)
    return LogBatch(model.name, model.version, at, logged, policy.max_entries)

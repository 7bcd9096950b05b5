"""One drift check of one model, as beat queues it (workers/schedule.py): no Celery in here.

Read the recent inputs of the production version from the prediction log
(core/prediction_log.py), compare them with the version's reference profile
(workers/drift.py), store the result where the gateway reads it (core/monitoring.py), and,
when the model's settings say so, ask for a retrain through the same single flight and gate
as beat's (core/single_flight.py), its trigger ``drift`` kept in the version it makes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import orjson
import redis
from loguru import logger

from core.monitoring import (
    DRIFT,
    NO_PRODUCTION,
    NO_PROFILE,
    NOT_ENOUGH_DATA,
    DriftResult,
    drift_retrain_key,
    monitoring_key,
)
from core.prediction_log import read_recent
from core.settings import MonitoringSettings
from core.single_flight import DRIFT as DRIFT_TRIGGER
from core.single_flight import request_retrain
from core.store import ModelStore
from workers.drift import assess

FIRST_READ = 64  # log entries read first; four times more each time, while rows are missing
MAX_READ_FACTOR = 4  # ...up to this many times monitoring.window entries


def recent_rows(
    client: redis.Redis, model: str, version: int, window: int, n_features: int
) -> tuple[np.ndarray, list | None]:
    """The newest ``window`` logged rows that ``version`` predicted, and the labels it
    predicted for them (None when an entry lacks them).

    An entry is one predict job (one row or many): the log is read from its newest end, more
    each time, until ``window`` rows are found, the log ends, or ``MAX_READ_FACTOR * window``
    entries were read. Rows of the wrong width or with a value that is not finite are left out.
    """
    count = min(FIRST_READ, window)
    while True:
        entries = read_recent(client, model, count)
        rows, predicted = _rows_of(entries, version, window, n_features)
        exhausted = len(entries) < count or count >= MAX_READ_FACTOR * window
        if len(rows) >= window or exhausted:
            matrix = np.asarray(rows, dtype=np.float64).reshape(len(rows), n_features)
            return matrix, predicted
        count = min(count * 4, MAX_READ_FACTOR * window)


def _rows_of(entries: list[dict], version: int, window: int, n_features: int):
    rows: list[list[float]] = []
    predicted: list | None = []
    for entry in reversed(entries):  # newest first
        if str(entry.get("version")) != str(version):
            continue
        inputs, outputs = _json(entry.get("rows")), _json(entry.get("outputs"))
        if not isinstance(inputs, list):
            continue
        if not isinstance(outputs, list) or len(outputs) != len(inputs):
            outputs, predicted = None, None
        for i, row in enumerate(inputs):
            if not _valid(row, n_features):
                continue
            rows.append(row)
            if predicted is not None:
                predicted.append(outputs[i])
            if len(rows) == window:
                return rows, predicted
    return rows, predicted


def _json(value):
    """A field as the log's reader gives it: decoded already, or still JSON text."""
    if isinstance(value, bytes | str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
    return value


def _valid(row, n_features: int) -> bool:
    return (
        isinstance(row, list)
        and len(row) == n_features
        and all(isinstance(v, int | float) and math.isfinite(v) for v in row)
    )


def check_drift(
    client: redis.Redis,
    store: ModelStore,
    cfg: MonitoringSettings,
    now: Callable[[], float] = time.time,
) -> DriftResult:
    """The drift of ``store``'s model's production version, as of now."""
    model = store.model_name
    base = {
        "model": model,
        "checked_at": now(),
        "window": cfg.window,
        "min_rows": cfg.min_rows,
        "psi_threshold": cfg.psi_threshold,
        "ks_p_value": cfg.ks_p_value,
    }
    version = store.production_version()
    if version is None:
        return DriftResult(**base, version=None, status=NO_PRODUCTION)
    meta = store.signed_metadata(version)
    profile = meta.reference_profile
    if profile is None:
        detail = f"v{version} has no reference profile (trained before drift monitoring)"
        return DriftResult(**base, version=version, status=NO_PROFILE, detail=detail)
    rows, predicted = recent_rows(client, model, version, cfg.window, len(profile.features))
    if len(rows) < cfg.min_rows:
        detail = f"{len(rows)} logged rows of v{version}, fewer than min_rows ({cfg.min_rows})"
        return DriftResult(
            **base, version=version, status=NOT_ENOUGH_DATA, rows=len(rows), detail=detail
        )
    found = assess(profile, rows, predicted, float(cfg.psi_threshold), float(cfg.ks_p_value))
    return DriftResult(
        **base,
        version=version,
        status=found.status,
        rows=len(rows),
        features=found.features,
        class_psi=found.class_psi,
        drifted_features=found.drifted_features,
    )


def maybe_retrain(
    client: redis.Redis, result: DriftResult, cfg: MonitoringSettings, ttl: int
) -> dict | None:
    """Ask for a retrain when ``cfg`` says so and ``result`` passes its threshold: what was
    done (the job, or why none), or None when drift does not call for one.

    At most one request per ``retrain_cooldown_seconds`` per model: a retrain that changes
    nothing (the same data, or rejected by the gate) must not be asked for at every check.
    """
    if not cfg.retrain_on_drift or result.status != DRIFT:
        return None
    largest = max([f.psi for f in result.features] + [result.class_psi or 0.0])
    if largest <= cfg.retrain_psi_threshold:
        return None
    cooldown = drift_retrain_key(result.model)
    if cfg.retrain_cooldown_seconds and not client.set(
        cooldown, result.checked_at, nx=True, ex=cfg.retrain_cooldown_seconds
    ):
        since = float(client.get(cooldown) or 0)
        return {"requested": False, "reason": f"cooldown: one was asked for at {since:.0f}"}
    detail = {
        "features": result.drifted_features,
        "psi": {f.name: round(f.psi, 6) for f in result.features if f.drifted},
        "class_psi": result.class_psi,
        "version": result.version,
        "rows": result.rows,
    }
    job_id, joined = request_retrain(
        client,
        result.model,
        requested_by="drift monitoring",
        ttl=ttl,
        trigger=DRIFT_TRIGGER,
        trigger_detail=detail,
    )
    logger.info(
        "drift of {} v{} ({}): retrain {} {}",
        result.model,
        result.version,
        ", ".join(result.drifted_features) or "predicted classes",
        "joins" if joined else "queued as",
        job_id,
    )
    return {"requested": True, "job_id": job_id, "joined": joined}


def run_monitoring(
    client: redis.Redis, store: ModelStore, cfg: MonitoringSettings, ttl: int
) -> DriftResult:
    """Check, maybe ask for a retrain, and store the result for the gateway."""
    result = check_drift(client, store, cfg)
    retrain = maybe_retrain(client, result, cfg, ttl)
    if retrain is not None:
        result = result.model_copy(update={"retrain": retrain})
    client.set(monitoring_key(result.model), result.model_dump_json())
    logger.info(
        "drift check of {} v{}: {} ({} rows){}",
        result.model,
        result.version,
        result.status,
        result.rows,
        f": {result.detail}" if result.detail else "",
    )
    return result

"""The labelled feedback a training run learns from, and the data version it makes with the
trainer's base data.

Before reading, the run moves the labels still waiting in Redis to the store (under the
flusher's lock, core/datasets.py), and notes how many labels existed then
(core/feedback.py ``trained_key``): the labels trigger counts from there. Without Redis (the
CLI on a laptop) it reads what the store holds.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import orjson
import redis
from loguru import logger

from core.datasets import FlushLock, flush_labels, read_feedback
from core.errors import MLOpsError
from core.feedback import count_key, trained_key
from core.store import DataPart, DataVersion, ModelStore
from training.data import Dataset, make_dataset

FLUSH_WAIT_SECONDS = 30


@dataclass(frozen=True)
class Feedback:
    """Labelled rows, oldest first (by label time), and their fingerprint."""

    X: np.ndarray
    y: np.ndarray
    fingerprint: str
    until: str | None
    dropped: int = 0  # rows logged with other features than the base data's

    @property
    def rows(self) -> int:
        return int(self.X.shape[0])


def _fingerprint(entries: list[dict]) -> str:
    """sha256 of the labelled jobs in order: the same labels on the same rows, the same print."""
    digest = hashlib.sha256()
    for entry in entries:
        digest.update(orjson.dumps([entry["job"], entry["label"], entry["rows"]]))
        digest.update(b"\n")
    return digest.hexdigest()


def snapshot(client: redis.Redis | None, store: ModelStore) -> None:
    """Move the labels waiting in Redis to the store and note the label count (best effort:
    without Redis, or while a flush holds the lock too long, the store's labels are used)."""
    if client is None:
        return
    model = store.model_name
    try:
        count = int(client.get(count_key(model)) or 0)
        with FlushLock(client, model).held(FLUSH_WAIT_SECONDS) as taken:
            if taken:
                flush_labels(client, store, batch=5000)
            else:
                logger.warning("labels of {} still being flushed: training on the store's", model)
        client.set(trained_key(model), count)
    except (redis.RedisError, OSError, MLOpsError) as exc:
        logger.warning("could not flush the labels of {} before training: {}", model, exc)


def load_feedback(store: ModelStore, feature_names: list[str]) -> Feedback:
    """Every labelled row in the store whose prediction used ``feature_names``; one label per
    row (a job of several rows has a list)."""
    entries = read_feedback(store)
    names: dict[int, list[str] | None] = {}
    kept, X, y, dropped = [], [], [], 0
    for entry in entries:
        version = entry["version"]
        if version not in names:
            try:
                names[version] = store.metadata(version).feature_names
            except (MLOpsError, OSError, ValueError):
                names[version] = None
        rows = entry["rows"]
        if names[version] != feature_names:
            dropped += len(rows)
            continue
        labels = entry["label"] if len(rows) > 1 else [entry["label"]]
        kept.append(entry)
        X += rows
        y += [str(label) for label in labels]
    if dropped:
        logger.warning(
            "{} labelled row(s) of {} were predicted with other features than {}: left out",
            dropped,
            store.model_name,
            feature_names,
        )
    until = (
        datetime.fromtimestamp(kept[-1]["time"], UTC).isoformat(timespec="seconds")
        if kept
        else None
    )
    return Feedback(
        np.asarray(X, dtype=np.float64).reshape(len(X), len(feature_names)),
        np.asarray(y, dtype=object),
        _fingerprint(kept),
        until,
        dropped,
    )


def combine(base: Dataset, feedback: Feedback) -> tuple[Dataset, DataVersion]:
    """The training data (base rows, then the feedback's) and its data version. Without
    feedback the fingerprint is the base data's, as before feedback existed."""
    version = DataVersion(
        base=DataPart(fingerprint=base.fingerprint, rows=base.n_rows, source=base.source),
        feedback=DataPart(
            fingerprint=feedback.fingerprint, rows=feedback.rows, until=feedback.until
        ),
    )
    if not feedback.rows:
        return base, version
    data = make_dataset(
        np.vstack([base.X, feedback.X]),
        np.concatenate([base.y, feedback.y]),
        base.feature_names,
        source=f"{base.source} + {feedback.rows} labelled feedback rows",
    )
    combined = hashlib.sha256(f"{base.fingerprint}+{feedback.fingerprint}".encode()).hexdigest()
    return Dataset(data.X, data.y, data.feature_names, combined, data.source), version

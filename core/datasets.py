"""The loop's data sets in the store: prediction logs and labelled feedback as dated files.

``<model>/data/predictions/YYYY-MM-DD/<first id>_<last id>.jsonl`` and
``<model>/data/feedback/YYYY-MM-DD/...`` (the store's ``write_data``: a folder or an object
store), one JSON object per line, written from Redis (core/prediction_log.py,
core/feedback.py) by :func:`flush`: the worker nodes' flusher (workers/flusher.py) every
``prediction_log.flush_seconds``, and training before it reads the labelled data
(training/feedback.py), one at a time per model (:class:`FlushLock`).

A file is written before its entries leave Redis; a flusher that dies in between writes them
again into a file of the same or an overlapping range. Readers therefore keep one line per job
(:func:`read_feedback`): the data sets hold each job at most once however often it was
written.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
import redis

from core.feedback import flush_lock_key, labels_key, read_pending
from core.prediction_log import flushed_key, read_after
from core.store import ModelStore

PREDICTIONS = "predictions"
FEEDBACK = "feedback"
MAX_BATCHES = 20  # per flush and kind: a flusher that is far behind still lets others in

RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class FlushLock:
    """One flush of a model at a time, across processes and nodes: a Redis key with a lease."""

    def __init__(self, client: redis.Redis, model: str, lease_seconds: float = 120):
        self.client = client
        self.key = flush_lock_key(model)
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease_ms = int(lease_seconds * 1000)

    def acquire(self, wait_seconds: float = 0.0) -> bool:
        deadline = time.monotonic() + wait_seconds
        while True:
            if self.client.set(self.key, self.token, nx=True, px=self.lease_ms):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def release(self) -> None:
        self.client.eval(RELEASE, 1, self.key, self.token)

    @contextlib.contextmanager
    def held(self, wait_seconds: float = 0.0) -> Iterator[bool]:
        """True inside the block when the lock was taken (then released at its end)."""
        taken = self.acquire(wait_seconds)
        try:
            yield taken
        finally:
            if taken:
                with contextlib.suppress(redis.RedisError):
                    self.release()


def _day(entry_id: str) -> str:
    """The UTC date of a stream entry, from its id's milliseconds."""
    return datetime.fromtimestamp(int(entry_id.split("-")[0]) / 1000, UTC).strftime("%Y-%m-%d")


def _write_by_day(store: ModelStore, kind: str, entries: list[dict]) -> None:
    by_day: dict[str, list[dict]] = {}
    for entry in entries:
        by_day.setdefault(_day(entry["id"]), []).append(entry)
    for day, lines in by_day.items():
        name = f"{kind}/{day}/{lines[0]['id']}_{lines[-1]['id']}.jsonl"
        store.write_data(name, b"".join(orjson.dumps(line) + b"\n" for line in lines))


def flush_predictions(client: redis.Redis, store: ModelStore, batch: int) -> int:
    """Write the log entries added since the last flush; return how many."""
    model = store.model_name
    written = 0
    for _ in range(MAX_BATCHES):
        after = client.get(flushed_key(model))
        entries = read_after(client, model, after.decode() if after else None, batch)
        if not entries:
            break
        for entry in entries:
            del entry["owner"]  # the API key's digest: not part of the data
        _write_by_day(store, PREDICTIONS, entries)
        client.set(flushed_key(model), entries[-1]["id"])
        written += len(entries)
        if len(entries) < batch:
            break
    return written


def flush_labels(client: redis.Redis, store: ModelStore, batch: int) -> list[dict]:
    """Move the labels waiting in Redis to the store; return them."""
    moved: list[dict] = []
    for _ in range(MAX_BATCHES):
        entries = read_pending(client, store.model_name, batch)
        if not entries:
            break
        _write_by_day(store, FEEDBACK, entries)
        client.xdel(labels_key(store.model_name), *(entry["id"] for entry in entries))
        moved += entries
        if len(entries) < batch:
            break
    return moved


def read_feedback(store: ModelStore) -> list[dict]:
    """Every labelled job flushed to the store, once each, oldest first (by label time, then
    entry id): ``job``, ``request``, ``version``, ``time``, ``label``, ``rows``, ``outputs``."""
    by_job: dict[str, dict] = {}
    for path in store.list_data(f"{FEEDBACK}/"):
        if not path.endswith(".jsonl"):
            continue
        for line in store.read_data(path).splitlines():
            if line.strip():
                entry = orjson.loads(line)
                by_job.setdefault(entry["job"], entry)
    return sorted(by_job.values(), key=lambda e: (e["time"], e["id"]))

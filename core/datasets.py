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
from core.prediction_log import flushed_key, read_lines
from core.store import ModelStore

PREDICTIONS = "predictions"
FEEDBACK = "feedback"
MAX_BATCHES = 20  # files per flush and kind: a flusher that is far behind still lets others in
READ_CHUNK = 200  # log entries per read: a 1,000-row entry is ~40 KB, so a reply stays ~8 MB
FILE_BYTES = 64 << 20  # a predictions file ends at this size, or at the flush batch's entries

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


def _write_by_day(store: ModelStore, kind: str, entries: list[tuple[str, bytes]]) -> None:
    """Write ``entries`` (entry id, its JSON lines) in one file per UTC day of their ids."""
    by_day: dict[str, list[tuple[str, bytes]]] = {}
    for entry in entries:
        by_day.setdefault(_day(entry[0]), []).append(entry)
    for day, lines in by_day.items():
        name = f"{kind}/{day}/{lines[0][0]}_{lines[-1][0]}.jsonl"
        store.write_data(name, b"".join(text for _, text in lines))


def _next_file(client: redis.Redis, model: str, after: str | None, batch: int):
    """The log entries of the next predictions file (``batch`` at most, ``FILE_BYTES`` about)
    as ``(entry id, jobs, lines)``, read ``READ_CHUNK`` at a time so that no reply is large;
    and whether they were the last ones."""
    entries: list[tuple[str, int, bytes]] = []
    size = 0
    while len(entries) < batch and size < FILE_BYTES:
        want = min(READ_CHUNK, batch - len(entries))
        read = read_lines(client, model, entries[-1][0] if entries else after, want)
        entries += read
        size += sum(len(lines) for _, _, lines in read)
        if len(read) < want:
            return entries, True
    return entries, False


def flush_predictions(client: redis.Redis, store: ModelStore, batch: int) -> int:
    """Write the log entries added since the last flush, ``batch`` entries per file at most;
    return how many jobs they hold."""
    model = store.model_name
    written = 0
    for _ in range(MAX_BATCHES):
        after = client.get(flushed_key(model))
        entries, last = _next_file(client, model, after.decode() if after else None, batch)
        if entries:
            _write_by_day(store, PREDICTIONS, [(ident, lines) for ident, _, lines in entries])
            client.set(flushed_key(model), entries[-1][0])
            written += sum(jobs for _, jobs, _ in entries)
        if last:
            break
    return written


def flush_labels(client: redis.Redis, store: ModelStore, batch: int) -> list[dict]:
    """Move the labels waiting in Redis to the store; return them."""
    moved: list[dict] = []
    for _ in range(MAX_BATCHES):
        entries = read_pending(client, store.model_name, batch)
        if not entries:
            break
        _write_by_day(store, FEEDBACK, [(e["id"], orjson.dumps(e) + b"\n") for e in entries])
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

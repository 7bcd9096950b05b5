"""Names and message shapes shared by the gateway and the workers.

The gateway publishes Celery task messages by NAME without importing ``workers`` (or Celery's
producer, which costs ~1 ms of CPU per call): :func:`celery_message` writes the same JSON
envelope kombu's Redis transport would, so a plain ``LPUSH`` in an async pipeline enqueues a
real Celery task that the worker, Flower and ``celery inspect`` all understand.

The body is JSON text, not base64 as kombu writes it: with no ``body_encoding`` kombu's
virtual transports hand the body to the JSON decoder as it is. A message is 25 % smaller for
1,000 rows (41.9 -> 31.6 KB; 13 one-row jobs 4.3 -> 3.7 KB), in the queue, the worker's
``unacked`` copy and every hop, and neither side encodes or decodes base64 (~70 µs of CPU per
1,000 rows on the 2-core machine). Messages Celery itself sends (beat, ``send_task``) keep
base64, and workers read both.
"""

from __future__ import annotations

import os
import re
import socket
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

PREDICT_QUEUE = "predict"
TRAIN_QUEUE = "train"
PREDICT_TASK = "mlops.predict_batch"
RETRAIN_TASK = "mlops.retrain"
MONITOR_TASK = "mlops.monitor_drift"  # one drift check of a model (workers/monitoring.py)

RESULTS_CHANNEL = "mlops:results"
"""Pub/sub channel: one message per finished batch (see :func:`pack_results`)."""

ALONE = "alone"
"""Message header: the gateway had nothing else in flight when it sent this predict message
(app/services/submitter.py); a worker whose pool is idle runs it in its main process."""

WORKERS_KEY = "mlops:workers"
"""Hash: worker process id -> JSON heartbeat (queues, served model version, time)."""

_ORIGIN = f"gateway{os.getpid()}@{socket.gethostname()}"

_SENT_AT = re.compile(rb'"sent_at":([0-9.eE+]+)')
HEAD_BYTES = 128  # sent_at is the first header, and headers come first in the envelope


def waited(message: bytes | str | None, now: float) -> float:
    """Seconds ``message`` has waited since the gateway wrote it (0: none, or no ``sent_at``),
    read from its first bytes only: a message may hold a megabyte of rows."""
    head = message[:HEAD_BYTES] if message else b""
    if isinstance(head, str):
        head = head.encode()
    found = _SENT_AT.search(head)
    return max(0.0, now - float(found.group(1))) if found else 0.0


def pack_results(results: list[tuple[str, bytes]]) -> bytes:
    """A batch's results message: the JSON list of job ids, then each result, one per line.

    Every gateway process receives every message; framing the results lets it parse the
    first line only and hand the raw result bytes of the jobs it waits for straight to
    their responses (orjson never writes a newline).
    """
    ids = orjson.dumps([job_id for job_id, _ in results])
    return b"\n".join([ids, *(raw for _, raw in results)])


def unpack_results(data: bytes) -> tuple[list, list[bytes]]:
    """``(job_ids, raw_results)`` of a results message; raises ValueError if malformed."""
    head, _, rest = data.partition(b"\n")
    ids = orjson.loads(head)
    lines = rest.split(b"\n") if rest else []
    if not isinstance(ids, list) or len(ids) != len(lines):
        raise ValueError("malformed results message")
    return ids, lines


def new_id() -> str:
    return str(uuid.uuid4())


def celery_message(
    task: str,
    args: list[Any],
    *,
    queue: str,
    task_id: str | None = None,
    expires_in: float | None = None,
    kwargs: dict[str, Any] | None = None,
    ignore_result: bool = False,
    model: str | None = None,
    headers: dict[str, Any] | None = None,
) -> tuple[str, bytes]:
    """Return ``(task_id, payload)``: a Celery protocol-2 message for ``LPUSH <queue>``.

    ``headers`` are added to Celery's (``traceparent``): a worker reads them in
    ``task.request``, as Celery does every header it does not know."""
    task_id = task_id or new_id()
    kwargs = kwargs or {}
    body = orjson.dumps(
        [args, kwargs, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    )
    expires = None
    if expires_in is not None:
        expires = (datetime.now(UTC) + timedelta(seconds=expires_in)).isoformat()
    # Headers first and sent_at first among them (not a Celery header; Celery ignores it):
    # :func:`waited` finds it in the message's first bytes.
    envelope = {
        "headers": {
            "sent_at": round(time.time(), 3),
            "lang": "py",
            "task": task,
            "id": task_id,
            # The name Celery's logs, events and Flower show: the task and its model.
            "shadow": f"{task}[{model}]" if model else None,
            "eta": None,
            "expires": expires,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [None, None],
            "root_id": task_id,
            "parent_id": None,
            "argsrepr": (
                f"<{len(args[0])} job(s)>" if args and isinstance(args[0], list) else repr(args)
            ),
            "kwargsrepr": "{}",
            "origin": _ORIGIN,
            # Celery lets this header override the task's own ignore_result.
            "ignore_result": ignore_result,
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
        },
        "body": body.decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "properties": {
            "correlation_id": task_id,
            "reply_to": "",
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "delivery_tag": new_id(),
        },
    }
    if headers:
        envelope["headers"].update(headers)
    return task_id, orjson.dumps(envelope)

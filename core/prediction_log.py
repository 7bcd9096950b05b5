"""The prediction log: each predict job's rows and predicted labels, one Redis stream per model.

Shape (read by feedback, drift monitoring and the flusher; keep the names):

- key :func:`stream_key` (``mlops:predlog:<model>``), capped with ``XADD MAXLEN ~``
  (``prediction_log.max_entries``);
- one entry per predict job with the fields ``job`` (job id), ``request`` (the client's
  request id or ""), ``owner`` (the API key's digest, or ""), ``version`` (the model version
  that answered), ``time`` (unix seconds), ``rows`` (JSON list of input rows, each a list of
  floats in the model's feature order) and ``outputs`` (JSON list of predicted labels).

Workers append with the results of a message (workers/batches.py): :data:`APPEND` runs in the
pipeline that stores the results and wakes the gateway, so logging costs no round trip.
It also keeps two indexes for feedback (app/services/feedback.py), trimmed with the stream:
job id -> the entry's millisecond (a sorted set), and ``<owner>:<request id>`` -> the
millisecond of its latest job; an entry is then found with ``XRANGE <ms> <ms>``. Labels kept
by job for idempotency (core/feedback.py) leave with their prediction.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

PREFIX = "mlops:predlog:"


def stream_key(model: str) -> str:
    return f"{PREFIX}{model}"


def job_index_key(model: str) -> str:
    """Sorted set: job id -> millisecond of its entry (the entry id's first part)."""
    return f"{PREFIX}{model}:jobs"


def request_index_key(model: str) -> str:
    """Sorted set: ``<owner>:<request id>`` -> millisecond of its latest job's entry."""
    return f"{PREFIX}{model}:requests"


def request_member(owner: str | None, request_id: str) -> str:
    return f"{owner or ''}:{request_id}"


def flushed_key(model: str) -> str:
    """The id of the last entry written to the store (workers/flusher.py)."""
    return f"{PREFIX}{model}:flushed"


def labelled_key(model: str) -> str:
    """Hash: job id -> its label (core/feedback.py); named here because :data:`APPEND` trims it."""
    return f"mlops:labels:{model}:by-job"


# KEYS: stream, job index, request index, labels by job. ARGV: max entries, then 7 values per
# entry (job, request, owner, version, time, rows, outputs). After appending, the indexes lose
# what the stream's cap removed (MAXLEN ~ trims whole nodes of ~100 entries, so this runs about
# once per hundred entries), and so do the labels kept for idempotency: a prediction that left
# the log takes no feedback.
APPEND = """
local ms
for i = 2, #ARGV, 7 do
  local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
    'job', ARGV[i], 'request', ARGV[i + 1], 'owner', ARGV[i + 2], 'version', ARGV[i + 3],
    'time', ARGV[i + 4], 'rows', ARGV[i + 5], 'outputs', ARGV[i + 6])
  ms = tonumber(string.match(id, '^(%d+)'))
  redis.call('ZADD', KEYS[2], ms, ARGV[i])
  if ARGV[i + 1] ~= '' then
    redis.call('ZADD', KEYS[3], ms, ARGV[i + 2] .. ':' .. ARGV[i + 1])
  end
end
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
if not first then return 0 end
local below = '(' .. string.match(first[1], '^(%d+)')
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', below)
if #gone == 0 then return 0 end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', below)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', below)
for i = 1, #gone, 1000 do
  redis.call('HDEL', KEYS[4], unpack(gone, i, math.min(i + 999, #gone)))
end
return #gone
"""


def entry_values(
    job_id: str,
    request_id: str | None,
    owner: str | None,
    version: int,
    at: float,
    rows: list,
    outputs: list,
) -> tuple:
    """One entry's 7 values, in :data:`APPEND`'s order."""
    return (
        job_id,
        request_id or "",
        owner or "",
        version,
        repr(float(at)),
        orjson.dumps(rows),
        orjson.dumps(outputs),
    )


def append_args(model: str, entries: Iterable[tuple], max_entries: int) -> tuple:
    """``EVAL`` arguments that append ``entries`` (:func:`entry_values`) to ``model``'s log."""
    keys = (stream_key(model), job_index_key(model), request_index_key(model), labelled_key(model))
    values = [value for entry in entries for value in entry]
    return (APPEND, len(keys), *keys, max_entries, *values)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def decode_entry(entry_id: bytes | str, fields: dict) -> dict[str, Any]:
    """An entry as read from Redis, typed: ``id``, ``job``, ``request``, ``owner``,
    ``version`` (int), ``time`` (float), ``rows`` and ``outputs`` (lists)."""
    text = {_text(k): v for k, v in fields.items()}
    return {
        "id": _text(entry_id),
        "job": _text(text.get("job", b"")),
        "request": _text(text.get("request", b"")),
        "owner": _text(text.get("owner", b"")),
        "version": int(text.get("version", 0)),
        "time": float(text.get("time", 0)),
        "rows": orjson.loads(text.get("rows", b"[]")),
        "outputs": orjson.loads(text.get("outputs", b"[]")),
    }


def read_recent(client, model: str, count: int) -> list[dict]:
    """The last ``count`` entries of ``model``'s log, decoded (:func:`decode_entry`), oldest
    first and newest last. ``client``: a synchronous redis-py client."""
    newest_first = client.xrevrange(stream_key(model), "+", "-", count=count)
    return [decode_entry(entry_id, fields) for entry_id, fields in reversed(newest_first)]


def read_after(client, model: str, after: str | None, count: int) -> list[dict]:
    """Up to ``count`` entries after the id ``after`` (None: from the first), oldest first."""
    start = f"({after}" if after else "-"
    return [decode_entry(i, f) for i, f in client.xrange(stream_key(model), start, "+", count)]

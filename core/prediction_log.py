"""The prediction log: each predict job's rows and predicted labels, one Redis stream per model.

Shape (read by feedback, drift monitoring and the flusher; keep the names):

- key :func:`stream_key` (``mlops:predlog:<model>``), capped with ``XADD MAXLEN ~``
  (``prediction_log.max_entries``);
- one entry per predict job with the fields ``job`` (job id), ``request`` (the client's
  request id or ""), ``owner`` (the API key's digest, or ""), ``version`` (the model version
  that answered), ``time`` (unix seconds), ``rows`` (JSON list of input rows, each a list of
  floats in the model's feature order) and ``outputs`` (JSON list of predicted labels).

Workers append with the results of a message (workers/batches.py): :data:`APPEND` runs in the
pipeline that stores the results and wakes the gateway, so logging costs no round trip. It
also indexes each entry for feedback (app/services/feedback.py) in one sorted set,
:func:`index_key`: ``j:<job id>`` and ``r:<owner>:<request id>`` (the latest job with that
request id) -> the millisecond of the entry id, so that ``XRANGE <ms> <ms>`` finds it.
Keeping the index in step with the stream's cap is the flusher's job (:data:`TRIM`, every
``prediction_log.flush_seconds``), not the hot path's: until then a trimmed entry's index
member finds nothing, which is what it should find. Labels kept by job for idempotency
(core/feedback.py) leave with their prediction.

Measured on the 2-core machine (real redis-server, a message of 4 one-row jobs): the script
adds ~12 µs of Redis CPU and ~15 µs of the worker's per job
(benchmarks/prediction_log.py; README "Performance").
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import orjson

PREFIX = "mlops:predlog:"


def stream_key(model: str) -> str:
    return f"{PREFIX}{model}"


def index_key(model: str) -> str:
    """Sorted set: :func:`job_member` and :func:`request_member` -> millisecond of the entry."""
    return f"{PREFIX}{model}:index"


def job_member(job_id: str) -> str:
    return f"j:{job_id}"


def request_member(owner: str | None, request_id: str) -> str:
    """The latest job of ``owner`` (an API key's digest) with this request id."""
    return f"r:{owner or ''}:{request_id}"


def flushed_key(model: str) -> str:
    """The id of the last entry written to the store (workers/flusher.py)."""
    return f"{PREFIX}{model}:flushed"


def labelled_key(model: str) -> str:
    """Hash: job id -> its label (core/feedback.py); named here because :data:`TRIM` trims it."""
    return f"mlops:labels:{model}:by-job"


# KEYS: stream, index. ARGV: max entries, then 7 values per entry (job, request, owner,
# version, time, rows, outputs).
APPEND = """
for i = 2, #ARGV, 7 do
  local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
    'job', ARGV[i], 'request', ARGV[i + 1], 'owner', ARGV[i + 2], 'version', ARGV[i + 3],
    'time', ARGV[i + 4], 'rows', ARGV[i + 5], 'outputs', ARGV[i + 6])
  local ms = string.match(id, '^%d+')
  if ARGV[i + 1] == '' then
    redis.call('ZADD', KEYS[2], ms, 'j:' .. ARGV[i])
  else
    redis.call('ZADD', KEYS[2], ms, 'j:' .. ARGV[i], ms, 'r:' .. ARGV[i + 2] .. ':' .. ARGV[i + 1])
  end
end
return 0
"""
APPEND_SHA = hashlib.sha1(APPEND.encode(), usedforsecurity=False).hexdigest()  # Redis names it so

# KEYS: stream, index, labels by job. The index members (and labels) older than the stream's
# first entry, i.e. removed by its cap; returns how many.
TRIM = """
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
local below = first and ('(' .. string.match(first[1], '^%d+')) or '+inf'
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', below)
if #gone == 0 then return 0 end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', below)
local jobs = {}
for _, member in ipairs(gone) do
  if string.sub(member, 1, 2) == 'j:' then jobs[#jobs + 1] = string.sub(member, 3) end
end
for i = 1, #jobs, 1000 do
  redis.call('HDEL', KEYS[3], unpack(jobs, i, math.min(i + 999, #jobs)))
end
return #gone
"""


def trim_index(client, model: str) -> int:
    """Drop the index members (and labels) of entries the cap removed; how many."""
    keys = (stream_key(model), index_key(model), labelled_key(model))
    return int(client.eval(TRIM, len(keys), *keys))


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
    """``EVALSHA`` arguments (after :data:`APPEND_SHA`) that append ``entries``
    (:func:`entry_values`) to ``model``'s log; ``EVAL`` takes them after :data:`APPEND`."""
    keys = (stream_key(model), index_key(model))
    values = [value for entry in entries for value in entry]
    return (len(keys), *keys, max_entries, *values)


def append(client, model: str, entries: list[tuple], max_entries: int) -> None:
    """Append ``entries`` at once (a synchronous client; workers do it in their pipeline)."""
    client.eval(APPEND, *append_args(model, entries, max_entries))


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

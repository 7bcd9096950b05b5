"""The prediction log: each predict job's rows and predicted labels, one Redis stream per model.

Shape (read by feedback, drift monitoring and the flusher; keep the names):

- key :func:`stream_key` (``mlops:predlog:<model>``), capped with ``XADD MAXLEN ~`` at about
  ``prediction_log.max_entries`` jobs (:func:`append_command`);
- one entry per predict message: the jobs one worker call answered, with the fields ``jobs``
  (JSON list of job ids), ``requests`` (their clients' request ids, "" for none), ``owners``
  (the API keys' digests, or ""), ``version`` (the model version that answered), ``time``
  (unix seconds), ``rows`` (JSON list, per job, of its input rows, each a list of floats in the
  model's feature order) and ``outputs`` (JSON list, per job, of its predicted labels).
  :func:`decode_message` turns an entry into one dict per job.

One entry per message, not per job: the cost of an entry (an XADD, the script's call, the
encoding) is paid once for all the jobs of a message, as the message's other costs are.

Workers append with the results of a message (workers/results.py): the script that stores the
results and wakes the gateways XADDs the entry (:func:`entry`) first, so it is there before
anyone hears of the answer. The hot path does nothing more in Redis for the log: no per-job
work.

Feedback (app/services/feedback.py) finds a job's entry through one sorted set,
:func:`index_key`: ``j:<job id>`` and ``r:<owner>:<request id>`` (the latest job with that
request id) -> the millisecond of the entry id, so that ``XRANGE <ms> <ms>`` finds it. The
index is built behind the stream, from :func:`indexed_key` (the last entry indexed) on, by
:data:`INDEX_NEW` in bulk: the workers' flusher runs it every ``INDEX_SECONDS``, and the
feedback script (core/feedback.py ``RESOLVE``) runs it first, so a label sent as soon as its
answer arrives finds its prediction. Indexing in the hot path cost ~1.5 µs of Redis time per
job, which the worker waited for: 6-8 % of the worker drain (README "Prediction log and
feedback"). Keeping the index in step with the stream's cap is the flusher's job too
(:data:`TRIM`, every ``prediction_log.flush_seconds``): until then a trimmed entry's index
member finds nothing, which is what it should find. Labels kept by job for idempotency
(core/feedback.py) leave with their prediction.

Measured on the 2-core machine (real redis-server, ``python -m benchmarks.prediction_log
--micro``): README "Prediction log and feedback".
"""

from __future__ import annotations

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


def indexed_key(model: str) -> str:
    """The id of the last entry whose jobs are in :func:`index_key` (:data:`INDEX_NEW`)."""
    return f"{PREFIX}{model}:indexed"


def labelled_key(model: str) -> str:
    """Hash: job id -> its label (core/feedback.py); named here because :data:`TRIM` trims it."""
    return f"mlops:labels:{model}:by-job"


INDEX_CHUNK = 25  # entries per call of index_new: 200 held Redis 5-15 ms under sync load
INDEX_SECONDS = 0.5  # how often each worker node's flusher indexes what was logged since

# A Lua function for scripts whose KEYS start with stream, index, indexed cursor: indexes the
# jobs of up to ``count`` entries after the cursor (job_member and request_member, built here
# as those build them) and moves the cursor; returns how many entries it indexed.
INDEX_FUNCTION = """
local function index_new(count)
  local after = redis.call('GET', KEYS[3])
  local entries = redis.call('XRANGE', KEYS[1], after and ('(' .. after) or '-', '+',
                             'COUNT', count)
  local scored = {}
  for _, entry in ipairs(entries) do
    local ms, fields, f = string.match(entry[1], '^%d+'), entry[2], {}
    for k = 1, #fields, 2 do f[fields[k]] = fields[k + 1] end
    local requests, owners = cjson.decode(f['requests']), cjson.decode(f['owners'])
    for i, job in ipairs(cjson.decode(f['jobs'])) do
      scored[#scored + 1] = ms
      scored[#scored + 1] = 'j:' .. job
      if requests[i] ~= '' then
        scored[#scored + 1] = ms
        scored[#scored + 1] = 'r:' .. owners[i] .. ':' .. requests[i]
      end
      if #scored >= 2000 then
        redis.call('ZADD', KEYS[2], unpack(scored))
        scored = {}
      end
    end
  end
  if #scored > 0 then redis.call('ZADD', KEYS[2], unpack(scored)) end
  if #entries > 0 then redis.call('SET', KEYS[3], entries[#entries][1]) end
  return #entries
end
"""
# KEYS: stream, index, indexed cursor. ARGV: entries at most. Returns how many it indexed.
INDEX_NEW = INDEX_FUNCTION + "return index_new(tonumber(ARGV[1]))\n"


def index_keys(model: str) -> tuple[str, str, str]:
    return stream_key(model), index_key(model), indexed_key(model)


def index_new(client, model: str) -> int:
    """Index every entry logged since the last call, :data:`INDEX_CHUNK` entries per script
    call; how many entries."""
    return _in_chunks(client, INDEX_NEW, index_keys(model), INDEX_CHUNK)


def _in_chunks(client, script: str, keys: tuple[str, ...], chunk: int) -> int:
    """Call ``script`` (its last argument: how much it may do) until a call does less: Redis
    serves other clients between the calls, not during one. The total done."""
    total = 0
    while True:
        done = int(client.eval(script, len(keys), *keys, chunk))
        total += done
        if done < chunk:
            return total


# KEYS: stream, index, labels by job. ARGV: members at most. Up to that many index members
# (and their labels) older than the stream's first entry, i.e. removed by its cap; returns how
# many. Bounded, as Redis serves no one during a script: in one call, what 30 s of sync load
# at 16 connections left held Redis for 138 ms (SLOWLOG, AMD VM), and every request with it.
TRIM = """
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
local below = first and ('(' .. string.match(first[1], '^%d+')) or '+inf'
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', below, 'LIMIT', 0, ARGV[1])
if #gone == 0 then return 0 end
redis.call('ZREM', KEYS[2], unpack(gone))
local jobs = {}
for _, member in ipairs(gone) do
  if string.sub(member, 1, 2) == 'j:' then jobs[#jobs + 1] = string.sub(member, 3) end
end
if #jobs > 0 then redis.call('HDEL', KEYS[3], unpack(jobs)) end
return #gone
"""
TRIM_CHUNK = 250  # index members per call of TRIM: 1,000 took ~4 ms of Redis under load


def trim_index(client, model: str) -> int:
    """Drop the index members (and labels) of entries the cap removed, :data:`TRIM_CHUNK` per
    script call; how many."""
    keys = (stream_key(model), index_key(model), labelled_key(model))
    return _in_chunks(client, TRIM, keys, TRIM_CHUNK)


def append_command(
    model: str, version: int, at: float, jobs: Iterable[tuple], max_entries: int
) -> tuple:
    """The XADD that logs one message's ``jobs``, each ``(job id, request id or None, owner or
    None, rows, outputs)``, answered by ``version`` at ``at``."""
    ids, requests, owners, rows, outputs = (list(column) for column in zip(*jobs, strict=True))
    columns = (ids, [r or "" for r in requests], [o or "" for o in owners], rows, outputs)
    stream, cap, values = entry(model, version, at, columns, max_entries)
    fields = [item for pair in zip(ENTRY_FIELDS, values, strict=True) for item in pair]
    return ("XADD", stream, "MAXLEN", "~", cap, "*", *fields)


ENTRY_FIELDS = ("jobs", "requests", "owners", "version", "time", "rows", "outputs")


def entry(model: str, version: int, at: float, columns: tuple[list, ...], max_entries: int):
    """``(stream key, cap, values in ENTRY_FIELDS order)`` of an entry given its job lists
    (:data:`MESSAGE_LISTS`, in that order; request ids and owners "" for none)."""
    ids, requests, owners, rows, outputs = columns
    # The cap counts jobs, about: each message trims the stream to the entries that many
    # messages of its size would fill, so it holds max_entries to 2 x max_entries jobs.
    cap = max(1, max_entries // max(1, len(ids)))
    values = (orjson.dumps(ids), orjson.dumps(requests), orjson.dumps(owners), version,
              repr(float(at)), orjson.dumps(rows), orjson.dumps(outputs))  # fmt: skip
    return stream_key(model), cap, values


def append(client, model: str, version: int, at: float, jobs: list[tuple], max_entries: int):
    """Log one message's ``jobs`` (:func:`append_command`) with a synchronous client (workers
    log inside their results script, workers/results.py)."""
    client.execute_command(*append_command(model, version, at, jobs, max_entries))


def as_text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def decode_entry(entry_id: bytes | str, fields: dict) -> dict[str, Any]:
    """An entry of one job (a label's, core/feedback.py), typed: ``id``, ``job``, ``request``,
    ``owner``, ``version`` (int), ``time`` (float), ``rows`` and ``outputs`` (lists)."""
    text = {as_text(k): v for k, v in fields.items()}
    return {
        "id": as_text(entry_id),
        "job": as_text(text.get("job", b"")),
        "request": as_text(text.get("request", b"")),
        "owner": as_text(text.get("owner", b"")),
        "version": int(text.get("version", 0)),
        "time": float(text.get("time", 0)),
        "rows": orjson.loads(text.get("rows", b"[]")),
        "outputs": orjson.loads(text.get("outputs", b"[]")),
    }


MESSAGE_LISTS = ("jobs", "requests", "owners", "rows", "outputs")  # one item per job


def decode_message(entry_id: bytes | str, fields: dict) -> list[dict[str, Any]]:
    """A log entry as read from Redis: one dict per job, shaped like :func:`decode_entry`'s
    (every job of the entry has its ``id``)."""
    text = {as_text(k): v for k, v in fields.items()}
    ident, version, at = as_text(entry_id), int(text.get("version", 0)), float(text.get("time", 0))
    columns = [orjson.loads(text.get(name, b"[]")) for name in MESSAGE_LISTS]
    return [
        {
            "id": ident,
            "job": job,
            "request": request,
            "owner": owner,
            "version": version,
            "time": at,
            "rows": rows,
            "outputs": outputs,
        }
        for job, request, owner, rows, outputs in zip(*columns, strict=True)
    ]


def read_recent(client, model: str, count: int) -> list[dict]:
    """The jobs of the last ``count`` entries of ``model``'s log, decoded
    (:func:`decode_message`), oldest first and newest last. ``client``: a synchronous
    redis-py client."""
    newest_first = client.xrevrange(stream_key(model), "+", "-", count=count)
    return [job for i, f in reversed(newest_first) for job in decode_message(i, f)]


def read_lines(client, model: str, after: str | None, count: int) -> list[tuple[str, int, bytes]]:
    """Up to ``count`` entries after the id ``after`` (None: from the first), oldest first, as
    data lines (:func:`data_lines`): ``(entry id, jobs, lines)`` each."""
    start = f"({after}" if after else "-"
    entries = client.xrange(stream_key(model), start, "+", count)
    return [(as_text(i), *data_lines(i, f)) for i, f in entries]


def data_lines(entry_id: bytes | str, fields: dict) -> tuple[int, bytes]:
    """An entry as the data sets' JSON lines (core/datasets.py): one per job, the fields of
    :func:`decode_message` but ``owner`` (an API key's digest is not data); and how many.

    The rows of an entry of one job (a batch request's, often 1,000 rows) are copied as they
    are, not parsed and encoded again: parsing alone took 0.86 ms per 1,000-row entry on the
    2-core machine, and a flush after a burst of batches held the GIL of the worker's
    consuming process for seconds (``python -m benchmarks.prediction_log --flush``). The
    copy is exact because only the workers' results script writes entries, with orjson
    (:func:`entry`), which also wrote the lines before."""
    text = {as_text(k): v for k, v in fields.items()}
    ident, version, at = as_text(entry_id), int(text.get("version", 0)), float(text.get("time", 0))
    jobs = orjson.loads(text.get("jobs", b"[]"))
    requests = orjson.loads(text.get("requests", b"[]"))
    rows, outputs = text.get("rows", b"[]"), text.get("outputs", b"[]")
    if len(jobs) == 1:
        rows, outputs = [orjson.Fragment(_only_item(rows))], [orjson.Fragment(_only_item(outputs))]
    else:
        rows, outputs = orjson.loads(rows), orjson.loads(outputs)
    lines = []
    for job, request, job_rows, job_outputs in zip(jobs, requests, rows, outputs, strict=True):
        line = {"id": ident, "job": job, "request": request, "version": version, "time": at}
        lines.append(orjson.dumps({**line, "rows": job_rows, "outputs": job_outputs}))
    return len(jobs), b"".join(line + b"\n" for line in lines)


def _only_item(column: bytes) -> bytes:
    """The item of a one-item JSON list as orjson wrote it (no spaces): ``[x]`` -> ``x``."""
    if len(column) < 3 or column[:1] != b"[" or column[-1:] != b"]":
        raise ValueError("a log entry's column is not a JSON list of one item")
    return column[1:-1]

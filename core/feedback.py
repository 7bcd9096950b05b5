"""Feedback labels: how a true label finds its prediction, and where labelled data waits.

Shared by the gateway (POST /models/{name}/feedback, app/services/feedback.py), the workers'
flusher (workers/flusher.py) and training (training/feedback.py). Keys, per model:

- the prediction log and its indexes (core/prediction_log.py): :data:`RESOLVE` finds the
  logged prediction of a job id, or of the caller's latest job with a request id;
- :func:`labels_key`, a stream of new labels (each with its prediction's rows and outputs),
  the labelled data not yet written to the store: the flusher moves it there, and at
  ``feedback.max_pending`` entries feedback is refused (429) until it has;
- ``labelled_key`` (core/prediction_log.py), job id -> label: a repeat is recognised, a
  different label for a labelled job is refused (409); it leaves with the prediction;
- :func:`window_key`, per version, the last ``feedback.quality_window`` (prediction, label)
  pairs, newest first: the live quality (core/quality.py);
- :func:`count_key`, labels (rows) ever recorded, and :func:`trained_key`, that count when the
  last training run took its snapshot: their difference is what the labels trigger counts.

:data:`RECORD` checks and writes a whole request's labels in one script: all of them or none.
"""

from __future__ import annotations

from typing import Any

import orjson

from core.prediction_log import (
    INDEX_CHUNK,
    INDEX_FUNCTION,
    as_text,
    decode_entry,
    decode_message,
    index_key,
    index_keys,
    labelled_key,
)

JOB, REQUEST = "j", "r"  # how an item names its prediction in RESOLVE's arguments


def labels_key(model: str) -> str:
    return f"mlops:labels:{model}"


def count_key(model: str) -> str:
    return f"mlops:labels:{model}:count"


def trained_key(model: str) -> str:
    return f"mlops:labels:{model}:trained"


def window_key(model: str, version: int) -> str:
    return f"mlops:quality:{model}:{version}"


def versions_key(model: str) -> str:
    """Set: the versions with a live-quality window."""
    return f"mlops:quality:{model}:versions"


def flush_lock_key(model: str) -> str:
    """Held by whoever moves ``model``'s log and labels to the store (workers/flusher.py)."""
    return f"mlops:flush:{model}"


# KEYS: the log stream, its index, its indexed cursor, labels by job. ARGV: triples (kind, id,
# owner). First indexes what the workers logged since the flusher last did (core/prediction_log.py
# INDEX_FUNCTION), so a label finds a prediction answered a moment ago. Per item:
# {} when nothing is logged under that id (never, sampled out, or gone with the cap), else
# {entry id, the job's place in the entry (from 0), {field, value, ...} or {} when an earlier
# item's reply has them already, its label or ""}. A request id names the caller's latest job
# with it.
RESOLVE = (
    INDEX_FUNCTION
    + f"""
while index_new({INDEX_CHUNK}) == {INDEX_CHUNK} do end
"""
    + """
local out, sent = {}, {}
for i = 1, #ARGV, 3 do
  local kind, id, owner = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local member = kind == 'j' and ('j:' .. id) or ('r:' .. owner .. ':' .. id)
  local ms = redis.call('ZSCORE', KEYS[2], member)
  local found = {}
  if ms then
    for _, entry in ipairs(redis.call('XRANGE', KEYS[1], ms, ms)) do
      local fields, f = entry[2], {}
      for k = 1, #fields, 2 do f[fields[k]] = fields[k + 1] end
      local jobs = cjson.decode(f['jobs'])
      local requests, owners
      if kind == 'r' then
        requests, owners = cjson.decode(f['requests']), cjson.decode(f['owners'])
      end
      for k = 1, #jobs do
        if (kind == 'j' and jobs[k] == id) or
           (kind == 'r' and requests[k] == id and owners[k] == owner) then
          found = {entry[1], k - 1, sent[entry[1]] and {} or fields,
                   redis.call('HGET', KEYS[4], jobs[k]) or ''}
        end
      end
    end
    if found[1] then sent[found[1]] = true end
  end
  out[#out + 1] = found
end
return out
"""
)

# KEYS: labels stream, labels by job, label count, trained count, versions set, the log's
# index, then one window key per item. ARGV: max pending, window size, then per item: job, label,
# request, version, time, rows, outputs, n, and n (prediction, label) pairs.
# Returns {'full', length} | {'gone', job, ...} | {'conflict', job, held, ...} having written
# nothing, or {'ok', count, trained, status per item ('new' | 'repeat')}.
RECORD = """
local pending = redis.call('XLEN', KEYS[1])
if pending >= tonumber(ARGV[1]) then return {'full', pending} end
local items, seen, gone, conflicts = {}, {}, {}, {}
local i = 3
local item = 0
while i <= #ARGV do
  item = item + 1
  local n = tonumber(ARGV[i + 7])
  local it = {job = ARGV[i], label = ARGV[i + 1], request = ARGV[i + 2], version = ARGV[i + 3],
              time = ARGV[i + 4], rows = ARGV[i + 5], outputs = ARGV[i + 6], first = i + 8,
              n = n, window = KEYS[6 + item]}
  local held = seen[it.job] or redis.call('HGET', KEYS[2], it.job)
  if not redis.call('ZSCORE', KEYS[6], 'j:' .. it.job) then
    gone[#gone + 1] = it.job
  elseif held and held ~= it.label then
    conflicts[#conflicts + 1] = it.job
    conflicts[#conflicts + 1] = held
  end
  it.status = held and 'repeat' or 'new'
  seen[it.job] = held or it.label
  items[#items + 1] = it
  i = i + 8 + n
end
if #gone > 0 then return {'gone', unpack(gone)} end
if #conflicts > 0 then return {'conflict', unpack(conflicts)} end
local window = tonumber(ARGV[2])
local added = 0
local out = {'ok', 0, 0}
for _, it in ipairs(items) do
  out[#out + 1] = it.status
  if it.status == 'new' then
    redis.call('HSET', KEYS[2], it.job, it.label)
    redis.call('XADD', KEYS[1], '*', 'job', it.job, 'label', it.label, 'request', it.request,
      'version', it.version, 'time', it.time, 'rows', it.rows, 'outputs', it.outputs)
    for p = it.first, it.first + it.n - 1 do redis.call('LPUSH', it.window, ARGV[p]) end
    redis.call('LTRIM', it.window, 0, window - 1)
    redis.call('SADD', KEYS[5], it.version)
    added = added + it.n
  end
end
out[2] = redis.call('INCRBY', KEYS[3], added)
out[3] = tonumber(redis.call('GET', KEYS[4]) or '0')
return out
"""


def resolve_args(model: str, items: list[tuple[str, str, str]]) -> tuple:
    """``EVAL`` arguments of :data:`RESOLVE` for ``(kind, id, owner)`` items."""
    keys = (*index_keys(model), labelled_key(model))
    return (RESOLVE, len(keys), *keys, *(value for item in items for value in item))


def decode_resolved(reply: list) -> list[dict[str, Any] | None]:
    """RESOLVE's reply, per item: the logged prediction of its job (core/prediction_log.py
    ``decode_message``) with ``label``, the label already recorded for it (None), or None."""
    messages: dict[str, list[dict]] = {}
    resolved: list[dict[str, Any] | None] = []
    for found in reply:
        if not found:
            resolved.append(None)
            continue
        entry_id, place, flat, held = found
        if flat:
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
            messages[as_text(entry_id)] = decode_message(entry_id, fields)
        entry = dict(messages[as_text(entry_id)][int(place)])
        entry["label"] = orjson.loads(held) if held else None
        resolved.append(entry)
    return resolved


def record_args(
    model: str, labelled: list[dict], max_pending: int, window: int, now: float
) -> tuple:
    """``EVAL`` arguments of :data:`RECORD`. ``labelled``: the resolved entries with their
    new ``label`` (one per row: a list when the job had several rows, else the value)."""
    keys = [
        labels_key(model),
        labelled_key(model),
        count_key(model),
        trained_key(model),
        versions_key(model),
        index_key(model),
    ]
    args: list = [max_pending, window]
    for entry in labelled:
        keys.append(window_key(model, entry["version"]))
        labels = entry["label"] if len(entry["rows"]) > 1 else [entry["label"]]
        pairs = [
            orjson.dumps([out, label]) for out, label in zip(entry["outputs"], labels, strict=True)
        ]
        args += [
            entry["job"],
            orjson.dumps(entry["label"]),
            entry["request"],
            entry["version"],
            repr(float(now)),
            orjson.dumps(entry["rows"]),
            orjson.dumps(entry["outputs"]),
            len(pairs),
            *pairs,
        ]
    return (RECORD, len(keys), *keys, *args)


def decode_label_entry(entry_id: bytes | str, fields: dict) -> dict[str, Any]:
    """A labels stream entry, typed like a log entry, with its ``label`` (JSON) decoded."""
    text = {(k.decode() if isinstance(k, bytes) else k): v for k, v in fields.items()}
    entry = decode_entry(entry_id, text)
    entry["label"] = orjson.loads(text["label"])
    del entry["owner"]
    return entry


def read_pending(client, model: str, count: int) -> list[dict]:
    """The oldest ``count`` labels not yet flushed to the store."""
    return [decode_label_entry(i, f) for i, f in client.xrange(labels_key(model), count=count)]


def window_pairs(raw: list) -> list[tuple[Any, Any]]:
    """A window as read with LRANGE: (prediction, label) pairs, newest first."""
    return [tuple(orjson.loads(pair)) for pair in raw]

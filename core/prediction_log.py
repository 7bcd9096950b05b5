"""The prediction log, reading side only: a STUB of the interface issue #15's prediction log
defines (its writer lives on another branch; this file is replaced by that one at the merge).

One Redis stream per model, :func:`stream_key`; one entry per predict job with the fields
``job``, ``request``, ``version``, ``time`` (unix seconds), ``rows`` (JSON list of input
rows in the model's feature order) and ``outputs`` (JSON list of predicted labels).
"""

from __future__ import annotations

import orjson
import redis

JSON_FIELDS = ("rows", "outputs")


def stream_key(model: str) -> str:
    return f"mlops:predlog:{model}"


def read_recent(client: redis.Redis, model: str, count: int) -> list[dict]:
    """The ``count`` newest entries of ``model``'s log, decoded, newest last."""
    entries = client.xrevrange(stream_key(model), count=count)
    return [_decode(fields) for _id, fields in reversed(entries)]


def _decode(fields: dict) -> dict:
    entry = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in fields.items()
    }
    for name in JSON_FIELDS:
        if name in entry:
            entry[name] = orjson.loads(entry[name])
    return entry

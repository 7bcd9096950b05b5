"""workers/fastjson.py decodes exactly as kombu's own JSON decoder does."""

from __future__ import annotations

import datetime
import uuid

import pytest
from kombu.utils import json as kombu_json

from workers import fastjson

CASES = [
    [[{"job_id": "a", "rows": [[5.1, 3.5, 1.4, 0.2]], "expires_at": 1.5}], {}, {"chain": None}],
    {"unicode": "é✓", "nested": {"x": [1, 2.5, None, True]}},
    {"when": datetime.datetime(2026, 1, 2, 3, 4, 5), "id": uuid.UUID(int=7)},  # type envelopes
]


@pytest.mark.parametrize("value", CASES)
@pytest.mark.parametrize("as_bytes", [True, False])
def test_same_result_as_kombu(value, as_bytes):
    encoded = kombu_json.dumps(value)
    data = encoded.encode() if as_bytes else encoded
    assert fastjson.loads(data) == kombu_json.loads(data)


@pytest.mark.parametrize("text", ["[NaN]", "[Infinity]"])
def test_what_orjson_refuses_falls_back_to_kombu(text):
    assert repr(fastjson.loads(text)) == repr(kombu_json.loads(text))


def test_integers_beyond_64_bits_decode_as_floats():
    assert fastjson.loads(f"[{10**30}]") == [1e30]


def test_installed_for_application_json():
    from kombu.serialization import loads

    fastjson.install()
    assert loads(b'{"a": [1]}', "application/json", "utf-8") == {"a": [1]}

"""app/services/rows.py: parse_predict_body and load_json (every body form the gateway accepts,
and each 422), and read_body's deadline."""

from __future__ import annotations

import asyncio
import json
import math
import time

import pytest
from starlette.requests import Request

from app.errors import BadRequest, RequestTimeout
from app.services.catalog import Production
from app.services.rows import (
    MAX_NESTING,
    MAX_REQUEST_ID,
    load_json,
    parse_predict_body,
    read_body,
)
from tests.factories import metadata

NAMES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


@pytest.fixture
def production() -> Production:
    return Production(metadata(NAMES, name="iris", version=1), NAMES, frozenset(NAMES))


def rejected(data, production, max_instances=1000) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        parse_predict_body(data, production, max_instances)
    assert info.value.status_code == 422
    return info.value


def test_single_object_in_model_feature_order(production):
    shuffled = {"petal_width": 0.2, "request_id": "r1", **dict(reversed(ROW.items()))}
    request_id, rows, is_batch = parse_predict_body(shuffled, production, 10)
    assert (request_id, rows, is_batch) == ("r1", [[5.1, 3.5, 1.4, 0.2]], False)


def test_single_object_without_request_id_and_with_ints(production):
    body = {"sepal_length": 5, "sepal_width": 3, "petal_length": 1, "petal_width": 0}
    request_id, rows, _ = parse_predict_body(body, production, 10)
    assert request_id is None
    assert rows == [[5.0, 3.0, 1.0, 0.0]]
    assert all(type(v) is float for v in rows[0])


def test_null_request_id_is_not_a_feature(production):
    assert parse_predict_body({**ROW, "request_id": None}, production, 10)[0] is None


def test_batch_of_objects_lists_and_both(production):
    body = {
        "request_id": "b",
        "instances": [ROW, [6.7, 3.0, 5.2, 2.3], {**ROW, "petal_length": 4.5}],
    }
    request_id, rows, is_batch = parse_predict_body(body, production, 10)
    assert request_id == "b" and is_batch
    assert rows == [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.1, 3.5, 4.5, 0.2]]


def test_batch_at_the_maximum_is_accepted(production):
    _, rows, _ = parse_predict_body({"instances": [ROW] * 3}, production, 3)
    assert len(rows) == 3


@pytest.mark.parametrize(
    ("body", "loc", "kind", "words"),
    [
        ([ROW], ["body"], "model_attributes_type", "JSON object"),
        ("text", ["body"], "model_attributes_type", "JSON object"),
        ({**ROW, "request_id": 7}, ["body", "request_id"], "string_type", "string"),
        (
            {**ROW, "request_id": "x" * (MAX_REQUEST_ID + 1)},
            ["body", "request_id"],
            "string_type",
            str(MAX_REQUEST_ID),
        ),
        (
            {k: v for k, v in ROW.items() if k != "petal_width"},
            ["body", "petal_width"],
            "missing",
            "petal_width",
        ),
        ({**ROW, "colour": 1.0}, ["body", "colour"], "extra_forbidden", "colour"),
        ({**ROW, "sepal_length": "5.1"}, ["body", "sepal_length"], "float_type", "str"),
        ({**ROW, "sepal_length": "١٢"}, ["body", "sepal_length"], "float_type", "str"),
        ({**ROW, "sepal_length": None}, ["body", "sepal_length"], "float_type", "NoneType"),
        ({**ROW, "sepal_length": True}, ["body", "sepal_length"], "float_type", "bool"),
        ({**ROW, "sepal_length": [1.0]}, ["body", "sepal_length"], "float_type", "list"),
        ({**ROW, "petal_width": math.nan}, ["body", "petal_width"], "finite_number", "finite"),
        ({**ROW, "petal_width": -math.inf}, ["body", "petal_width"], "finite_number", "finite"),
        ({**ROW, "petal_width": 10**400}, ["body", "petal_width"], "finite_number", "large"),
        ({"instances": []}, ["body", "instances"], "too_short", "at least one"),
        ({"instances": ROW}, ["body", "instances"], "list_type", "list"),
        ({"instances": [ROW], "colour": 1}, ["body", "colour"], "extra_forbidden", "colour"),
        ({"instances": [ROW, 5.1]}, ["body", "instances", 1], "type", "object"),
        (
            {"instances": [ROW, [5.1, 3.5, 1.4]]},
            ["body", "instances", 1],
            "length",
            "expected 4 values",
        ),
        (
            {"instances": [[5.1, 3.5, "x", 0.2]]},
            ["body", "instances", 0, 2],
            "float_type",
            "number",
        ),
        (
            {"instances": [ROW, {**ROW, "petal_length": math.inf}]},
            ["body", "instances", 1, "petal_length"],
            "finite_number",
            "finite",
        ),
        (
            {"instances": [{"sepal_length": 1.0}]},
            ["body", "instances", 0, "sepal_width"],
            "missing",
            "sepal_width, petal_length, petal_width",
        ),
    ],
)
def test_each_problem_is_a_422_at_its_field(production, body, loc, kind, words):
    error = rejected(body, production)
    assert error.loc == loc
    assert error.kind == kind
    assert words in error.message


def test_batch_over_the_maximum_names_the_limit(production):
    error = rejected({"instances": [ROW] * 4}, production, max_instances=3)
    assert error.loc == ["body", "instances"]
    assert error.kind == "too_long"
    assert "at most 3" in error.message and "got 4" in error.message


def test_load_json_parses_valid_bodies():
    assert load_json(b'{"a": [1, 2.5, "x"]}') == {"a": [1, 2.5, "x"]}


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (b'{"sepal_length": NaN, "sepal_width": 1}', ["body", "sepal_length"]),
        (b'{"a": 1, "petal_width": 1e999}', ["body", "petal_width"]),
        (b'{"a": 1, "petal_width": -Infinity}', ["body", "petal_width"]),
        (b'{"instances": [[1, 2, 3, 1' + b"0" * 400 + b"]]}", ["body", "instances", 0, 3]),
        (b'{"\\ud800": NaN}', ["body", "?"]),
    ],
)
def test_load_json_names_the_field_of_a_non_finite_number(body, loc):
    with pytest.raises(BadRequest) as info:
        load_json(body)
    assert info.value.loc == loc
    assert info.value.kind == "finite_number"
    assert "finite number" in info.value.message


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b'{"a": 1,}', b"[" * 5000 + b"]" * 5000, b"\xff\xfe", b'{"a": 1} x'],
)
def test_load_json_rejects_malformed_json_at_the_body(body):
    with pytest.raises(BadRequest) as info:
        load_json(body)
    assert info.value.loc == ["body"]
    assert info.value.kind == "json_invalid"
    assert info.value.message.startswith("invalid JSON:")


# -- hostile bodies: every 422 costs a few C passes over the body, never a walk of it ----------
def test_a_non_finite_number_nested_deeper_than_an_accepted_body_names_the_nesting():
    with pytest.raises(BadRequest) as info:
        load_json(b'{"instances": [[[NaN]]]}')
    assert info.value.kind == "json_too_deep"
    assert f"deeper than {MAX_NESTING} levels" in info.value.message


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b"[" * 1000 + b"NaN" + b"]" * 1000, 1000),  # too deep for orjson to close
        (b'{"a": [1], "b": 2, "a": [NaN]}', 25),  # a repeated key
        (b'{"a": 1, NaN}', 9),  # a value where a key belongs
    ],
)
def test_a_non_finite_number_that_cannot_be_located_is_reported_at_its_character(body, where):
    with pytest.raises(BadRequest) as info:
        load_json(body)
    assert info.value.loc == ["body"]
    assert info.value.kind == "finite_number"
    assert f"at character {where}" in info.value.message


@pytest.mark.parametrize("body", [b"[-01]", b"[01]", b'{"a": 00}', b"[1.5x]", b"{NaN: 1}"])
def test_a_malformed_number_or_a_nan_key_is_invalid_json_not_a_non_finite_number(body):
    with pytest.raises(BadRequest) as info:
        load_json(body)
    assert info.value.kind == "json_invalid"


def test_locating_costs_a_few_parses_not_a_walk_of_the_body():
    """The body that held the event loop for 33 s (a walk copying a 900-long loc per item)."""
    body = b"[" * 300 + b"0," * 400_000 + b"NaN" + b"]" * 300
    started = time.thread_time()
    with pytest.raises(BadRequest) as info:
        load_json(body)
    assert time.thread_time() - started < 0.5  # ~20 ms; the old walk took over 10 s
    assert info.value.kind == "json_too_deep"


def test_a_long_key_is_clipped_in_the_loc():
    with pytest.raises(BadRequest) as info:
        load_json(b'{"' + b"k" * 500_000 + b'": NaN}')
    assert info.value.kind == "finite_number"
    assert len(info.value.loc[1]) < 150
    assert "500000 characters" in info.value.loc[1]


def test_many_unknown_keys_name_a_few_in_body_order_and_count_the_rest(production):
    body = {**ROW, **{f"k{i}": 1 for i in range(100_000)}}
    error = rejected(body, production)
    assert error.loc == ["body", "k0"]
    assert error.kind == "extra_forbidden"
    assert "k0, k1, k2, k3, k4 and 99995 more" in error.message
    assert len(error.message) < 300


def test_many_fields_beside_instances_name_a_few(production):
    error = rejected({"instances": [ROW], **{f"f{i}": 1 for i in range(1000)}}, production)
    assert error.loc == ["body", "f0"]
    assert "f0, f1, f2, f3, f4 and 995 more" in error.message


def test_a_large_body_with_more_values_than_any_accepted_body_is_refused_unparsed(production):
    body = b'{"instances": [' + b"0.5," * 300_000 + b"NaN]}"
    with pytest.raises(BadRequest) as info:
        load_json(body, production, max_instances=1000)
    assert info.value.kind == "too_long"
    assert "300002" in info.value.message and "1000 instances of 4 features" in info.value.message


@pytest.mark.parametrize("form", ["objects", "lists"])
def test_the_largest_accepted_batches_pass_the_count(production, form):
    row = ROW if form == "objects" else list(ROW.values())
    body = json.dumps({"request_id": ",[{" * 66, "instances": [row] * 1000}, indent=16).encode()
    assert len(body) > 64 * 1024
    data = load_json(body, production, max_instances=1000)
    assert len(parse_predict_body(data, production, 1000)[1]) == 1000


@pytest.mark.parametrize(
    ("body", "kind", "words"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "json_invalid", "depth limit exceeded"),
        (b'{"instances": [[1, 2, NaN, ' + b"0.5," * 100_000 + b"0.5]]}", "finite_number", "finite"),
        (b'["\xff", ' + b"1," * 100_000 + b"1]", "json_invalid", "UTF-8"),
    ],
    ids=["deep-list", "nan-first", "invalid-utf8-first"],
)
def test_a_body_refused_by_the_count_still_gets_an_error_of_its_first_64_kib(
    production, body, kind, words
):
    with pytest.raises(BadRequest) as info:
        load_json(body, production, max_instances=1000)
    assert info.value.kind == kind
    assert words in info.value.message


# --- the body deadline (app/services/rows.py read_body) -----------------------------------


def slow_request(declared: bool) -> Request:
    """A request whose body starts but never finishes."""
    headers = [(b"content-length", b"100")] if declared else []
    sent = []

    async def receive():
        if not sent:
            sent.append(True)
            return {"type": "http.request", "body": b"{", "more_body": True}
        await asyncio.sleep(3600)

    return Request({"type": "http", "method": "POST", "headers": headers}, receive)


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_body_not_received_within_the_deadline_is_a_408(declared):
    async def read():
        started = asyncio.get_running_loop().time()
        with pytest.raises(RequestTimeout, match=r"within 0\.2 s") as info:
            await read_body(slow_request(declared), 1024, 0.2)
        return info.value, asyncio.get_running_loop().time() - started

    error, waited = asyncio.run(read())
    assert error.status_code == 408 and error.reason == "timeout"
    assert 0.2 <= waited < 2


def test_a_cancelled_body_read_stays_cancelled():
    """Only the deadline's own cancellation becomes a 408; a client gone or a shutdown does not."""

    async def read():
        task = asyncio.create_task(read_body(slow_request(True), 1024, 0.5))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(read())


@pytest.mark.parametrize(
    ("raw", "loc"),
    [
        (b'{"inputs": [{"name": "input-0", "data": [1, NaN, 2, 3]}]}', ["inputs", 0, "data", 1]),
        (b'{"inputs": [{"data": [[1, 2], [3, -Infinity]]}]}', ["inputs", 0, "data", 1, 1]),
    ],
)
def test_a_deeper_protocol_body_gets_its_non_finite_number_located(raw, loc):
    with pytest.raises(BadRequest) as info:
        load_json(raw, nesting=5)  # the Open Inference Protocol's bodies
    assert info.value.loc == ["body", *loc]
    with pytest.raises(BadRequest, match="deeper than 5 levels"):
        load_json(b"[[[[[[NaN]]]]]]", nesting=5)

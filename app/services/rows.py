"""Turn a /predict body into rows in the model's feature order, or a 422 naming the problem.

Hand-written instead of a pydantic model: the feature names come from the production model at
run time, and this is the hottest code in the gateway.
"""

from __future__ import annotations

import asyncio
import math
import re
from itertools import filterfalse, islice
from typing import Any

import orjson

from app.errors import BadRequest, PayloadTooLarge, RequestTimeout, clip
from app.schemas import MAX_REQUEST_ID
from app.services.catalog import Production

_MAX_DOUBLE = 1.7976931348623157e308
_FLOAT = frozenset({float})
_NUMBER = frozenset({float, int})
_BATCH_FIELDS = frozenset({"request_id", "instances"})
_SHOWN = 5  # unknown keys named in a 422; a body may hold 100,000
_COUNT_ABOVE = 64 * 1024  # bytes; see _check_value_count
_ALL_BUT_SEPARATORS = bytes(set(range(256)) - set(b",[{"))


def _number(value: Any, loc: list) -> float:
    if type(value) is float:
        if math.isfinite(value):
            return value
        raise BadRequest("must be a finite number", loc, "finite_number")
    if type(value) is int:
        try:
            return float(value)
        except OverflowError:
            raise BadRequest("number is too large", loc, "finite_number") from None
    raise BadRequest(f"must be a number, got {type(value).__name__}", loc, "float_type")


def _row_from_object(obj: dict, production: Production, loc: list) -> list[float]:
    if obj.keys() != production.feature_set:
        missing = [n for n in production.feature_names if n not in obj]
        if missing:
            raise BadRequest(
                f"missing feature(s): {', '.join(missing)}", [*loc, missing[0]], "missing"
            )
        extra = _unknown(obj, production.feature_set, len(obj) - len(production.feature_set))
        raise BadRequest(
            f"unknown feature(s): {extra}; the model expects {', '.join(production.feature_names)}",
            [*loc, clip(next(filterfalse(production.feature_set.__contains__, obj)))],
            "extra_forbidden",
        )
    return [_number(obj[name], [*loc, name]) for name in production.feature_names]


def _unknown(obj: dict, known, count: int) -> str:
    """The first few unknown keys, in body order, and how many more (no sort of them all)."""
    shown = [clip(k) for k in islice(filterfalse(known.__contains__, obj), _SHOWN)]
    more = f" and {count - len(shown)} more" if count > len(shown) else ""
    return ", ".join(shown) + more


def _row_from_list(values: list, production: Production, loc: list) -> list[float]:
    if len(values) != len(production.feature_names):
        raise BadRequest(
            f"expected {len(production.feature_names)} values in the order "
            f"{', '.join(production.feature_names)}, got {len(values)}",
            loc,
            "length",
        )
    return [_number(v, [*loc, i]) for i, v in enumerate(values)]


async def read_body(request, max_bytes: int, max_seconds: float) -> bytes:
    """The request body, or a 413 once it passes ``max_bytes`` (declared or streamed), or a
    408 if it has not all arrived within ``max_seconds``.

    Only routes that read a body need the limits, so they live here rather than in a
    middleware every request would cross.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"request body larger than {max_bytes} bytes")
    # asyncio.timeout() would do, at ~9 µs of CPU per request (measured with uvloop on the
    # 2-core machine); this timer and closure cost ~2.5 µs.
    task = asyncio.current_task()
    expired = []

    def expire() -> None:
        expired.append(True)
        task.cancel()

    timer = asyncio.get_running_loop().call_later(max_seconds, expire)
    try:
        return await _receive_body(request, declared is not None, max_bytes)
    except asyncio.CancelledError:
        if not expired or task.uncancel():  # cancelled by someone else too: let it through
            raise
        raise RequestTimeout(
            f"the request body did not arrive within {max_seconds:g} s "
            "(gateway.body_timeout_seconds)"
        ) from None
    finally:
        timer.cancel()


async def _receive_body(request, declared: bool, max_bytes: int) -> bytes:
    if declared:  # the server delivers exactly Content-Length bytes
        return await request.body()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"request body larger than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def load_json(
    body: bytes,
    production: Production | None = None,
    max_instances: int = 0,
    slack: int = 0,
    nesting: int | None = None,
) -> Any:
    """Parse a request body, or raise a 422; a non-finite number is reported at its field.

    Given the production model, a body over 64 KiB is first counted (see
    :func:`_check_value_count`); without it, as in unit tests, it is only parsed. Another
    protocol's body (V2) gives ``slack``, the separators its accepted bodies hold beside the
    rows, and ``nesting``, their depth (default :data:`MAX_NESTING`).
    """
    nesting = nesting or MAX_NESTING
    if production is not None and len(body) > _COUNT_ABOVE:
        _check_value_count(body, production, max_instances, slack, nesting)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        error = exc
    raise _decode_error(body, error, nesting)


def _check_value_count(
    body: bytes, production: Production, max_instances: int, slack: int = 0, nesting: int = 3
) -> None:
    """Refuse, before parsing, a body with more values than any accepted body holds.

    orjson's time depends on what a body holds, not only its size: 1 MiB of ``[],`` took
    150 ms to parse and free, against 0.3 ms for a 1,000-row batch. Every value or container
    beyond the first of each array or object needs a ``,``, and every container a ``[`` or
    ``{``; an accepted body has at most ``max_instances`` rows of the model's width, plus what
    its strings may hold (the request id, feature names as keys). One pass in C (under 1 ms
    for 1 MiB), only for bodies over 64 KiB: smaller ones parse in ~2 ms whatever they hold,
    and so does the first 64 KiB of a refused one, parsed to report an error it holds.
    """
    names = production.feature_names
    in_names = sum(name.count(",") + name.count("[") + name.count("{") for name in names)
    limit = max_instances * (len(names) + 1 + in_names) + MAX_REQUEST_ID + 3 + slack
    count = len(body.translate(None, _ALL_BUT_SEPARATORS))
    if count > limit:
        early = _early_error(body, nesting)
        if early is not None:
            raise early
        raise BadRequest(
            f"the body holds {count} ',', '[' and '{{' characters, more than an accepted body "
            f"can ({limit}: at most {max_instances} instances of {len(names)} features)",
            ["body"],
            "too_long",
        )


def _early_error(body: bytes, nesting: int) -> BadRequest | None:
    """The 422 for a JSON error in the first 64 KiB of ``body``, as parsing all of it would
    give (e.g. orjson's depth limit), or None; its last KiB is not trusted, being cut."""
    cut = _COUNT_ABOVE
    while body[cut] & 0xC0 == 0x80:  # not inside a UTF-8 sequence
        cut -= 1
    head = body[:cut]
    try:
        orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        try:
            length = len(head.decode())
        except UnicodeDecodeError:
            length = cut
        if exc.pos < length - 1024:
            return _decode_error(head, exc, nesting)
    return None


_FINITE = "must be a finite number (NaN, Infinity and numbers beyond a double are not accepted)"
# Where orjson stops that the standard parser would read on: NaN, Infinity, or a well-formed
# number (orjson refuses one only when it overflows a double), as a whole value. Looked at
# through a window of 1,024 characters: a longer number gets orjson's own message ("number is
# infinity when parsed as double").
_NON_FINITE = re.compile(r"-?(?:NaN|Infinity|(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)")
_AFTER_VALUE = frozenset({"", ",", "]", "}", " ", "\t", "\n", "\r"})
_SURROGATE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATES_REPLACED = 100
_MARK = "\x00 the value to locate"
_MARK_JSON = orjson.dumps(_MARK).decode()
MAX_NESTING = 3  # {"instances": [[...]]}: the deepest accepted body


def _decode_error(body: bytes, exc: orjson.JSONDecodeError, nesting: int) -> BadRequest:
    """The 422 for a body orjson refused: at the field of a non-finite number, else at the body.

    orjson stops at the first problem and says where (``pos``, in characters); only the text
    before it is looked at, by orjson again (:func:`_path_to`), so the cost is that of a few
    parses whatever the body. Before, the standard parser read the whole body and Python
    walked everything it held: up to 40 s for 1 MiB, the event loop held all along.
    """
    invalid = BadRequest(f"invalid JSON: {exc}", ["body"], "json_invalid")
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return invalid
    at = _non_finite_at(text, exc.pos)
    if at is None and _SURROGATE.match(text, exc.pos):
        # orjson refuses a lone surrogate (\ud800) that the standard parser reads; with the
        # first surrogate escapes replaced by "?" (as long), look again for a non-finite number.
        text = _SURROGATE.sub(r"\\u003f", text, count=_SURROGATES_REPLACED)
        try:
            orjson.loads(text)
        except orjson.JSONDecodeError as again:
            at = _non_finite_at(text, again.pos)
    if at is None:
        return invalid
    loc = _path_to(text, at, nesting)
    if loc is None:
        return BadRequest(f"{_FINITE}; found at character {at}", ["body"], "finite_number")
    return BadRequest(_FINITE, loc, "finite_number")


def _non_finite_at(text: str, pos: int) -> int | None:
    start = pos - 1 if pos and text[pos - 1] == "-" else pos  # "-Infinity": pos is at the I
    token = _NON_FINITE.match(text, start, start + 1024)
    if token is None or text[token.end() : token.end() + 1] not in _AFTER_VALUE:
        return None  # not a whole value: "01" (orjson's "leading zero"), "NaN:", cut short
    return start


def _path_to(text: str, at: int, nesting: int = MAX_NESTING) -> list | None:
    """The loc of the value starting at ``at`` in ``text``, which is valid JSON before it.

    The text before, with a mark in place of the value, is closed and parsed by orjson (C):
    a parse that runs out of text shows one more bracket is open, a wrong guess of which
    fails right where it stands, so at most ``2 * nesting`` parses (guessed from the
    accepted shapes, usually one a level); then the loc is the last element of each level.
    None when that fails: a value where a key belongs, a repeated key, or a nesting so deep
    that orjson gives up on the unclosed text ("failed to allocate memory" from ~400 levels).
    """
    before = text[:at]
    head = before.encode() + _MARK_JSON.encode()  # bytes: orjson would encode a str each time
    size = at + len(_MARK_JSON)  # in characters, as orjson's positions are
    last, first = before.rstrip()[-1:], before.lstrip()[:1]
    guesses = ("}" if last == ":" else "]", "]", *"]" * (nesting - 3), "}" if first == "{" else "]")
    closers, switched = guesses[0] if last else "", 0
    while True:
        try:
            data = orjson.loads(head + closers.encode())
            break
        except orjson.JSONDecodeError as exc:
            end = size + len(closers)
            if exc.pos == end:  # complete so far: one more bracket is open
                if len(closers) == nesting:
                    raise BadRequest(
                        f"nested deeper than {nesting} levels, deeper than any accepted body",
                        ["body"],
                        "json_too_deep",
                    ) from None
                closers += guesses[len(closers)]
            elif exc.pos == end - 1 and switched < len(closers):
                closers = closers[:-1] + ("}" if closers[-1] == "]" else "]")
                switched = len(closers)
            else:
                return None
    loc: list = ["body"]
    for _ in closers:
        if isinstance(data, list) and data:
            loc.append(len(data) - 1)
            data = data[-1]
        elif isinstance(data, dict) and data:  # at its latest key, unless that was a repeat
            key = next(reversed(data))
            loc.append(clip(key))
            data = data[key]
        else:
            return None
    return loc if data == _MARK else None


def _plain_rows(instances: list, width: int) -> list | None:
    """The rows as they are when every instance is a list of ``width`` plain numbers.

    The common batch form, checked a whole batch at a time (a few C-level passes instead
    of a Python call per value); anything else returns None and takes the exact path,
    which finds and names the first bad value.
    """
    if not all(type(row) is list and len(row) == width for row in instances):
        return None
    kinds = {type(value) for row in instances for value in row}
    if kinds <= _FLOAT:  # orjson already refused NaN and infinity
        return instances
    if kinds <= _NUMBER and all(
        -_MAX_DOUBLE <= value <= _MAX_DOUBLE
        for row in instances
        for value in row
        if type(value) is int
    ):
        return instances
    return None


def parse_predict_body(
    data: Any, production: Production, max_instances: int
) -> tuple[str | None, list[list[float]], bool]:
    """Return ``(request_id, rows, is_batch)`` for either accepted body form."""
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object", ["body"], "model_attributes_type")
    request_id = data.get("request_id")
    if request_id is not None and (
        not isinstance(request_id, str) or len(request_id) > MAX_REQUEST_ID
    ):
        raise BadRequest(
            f"must be a string of at most {MAX_REQUEST_ID} characters",
            ["body", "request_id"],
            "string_type",
        )
    if "instances" not in data:
        features = data
        if "request_id" in data:
            features = data.copy()
            del features["request_id"]
        return request_id, [_row_from_object(features, production, ["body"])], False
    extra = len(data) - 1 - ("request_id" in data)
    if extra:
        raise BadRequest(
            f"unknown field(s) beside instances: {_unknown(data, _BATCH_FIELDS, extra)}",
            ["body", clip(next(filterfalse(_BATCH_FIELDS.__contains__, data)))],
            "extra_forbidden",
        )
    instances = data["instances"]
    if not isinstance(instances, list):
        raise BadRequest("must be a list", ["body", "instances"], "list_type")
    if not instances:
        raise BadRequest("must hold at least one instance", ["body", "instances"], "too_short")
    if len(instances) > max_instances:
        raise BadRequest(
            f"at most {max_instances} instances per request, got {len(instances)}",
            ["body", "instances"],
            "too_long",
        )
    rows = _plain_rows(instances, len(production.feature_names))
    if rows is not None:
        return request_id, rows, True
    rows = []
    for i, item in enumerate(instances):
        loc = ["body", "instances", i]
        if isinstance(item, dict):
            rows.append(_row_from_object(item, production, loc))
        elif isinstance(item, list):
            rows.append(_row_from_list(item, production, loc))
        else:
            raise BadRequest("must be an object of features or a list of values", loc, "type")
    return request_id, rows, True

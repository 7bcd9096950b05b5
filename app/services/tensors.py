"""Open Inference Protocol (KServe V2) tensors: a request's input into rows, a result into outputs.

Pure Python over the flat list of values, no numpy: a body is at most ``api.max_body_bytes``
and ``api.max_instances`` rows, and the common forms (a list of rows, a flat list) are checked
a whole tensor at a time by C-level passes (``set``, ``min``, ``max``), as app/services/rows.py
does for /predict. Every refusal is a :class:`BadRequest` naming the problem; the V2 routes
answer it as ``400 {"error": ...}``.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from itertools import chain
from typing import Any

from app.errors import BadRequest, clip
from app.schemas import MAX_REQUEST_ID

INPUT = "input-0"  # the one input tensor: rows of the model's features, in their order
LABEL = "label"  # one predicted class (or value) per row
PROBABILITIES = "probabilities"  # rows of class probabilities, in the model's classes order
_MAX_FP32 = 3.4028234663852886e38
_MAX_DOUBLE = 1.7976931348623157e308
_INT_RANGES = {
    "INT8": (-(2**7), 2**7 - 1),
    "INT16": (-(2**15), 2**15 - 1),
    "INT32": (-(2**31), 2**31 - 1),
    "INT64": (-(2**63), 2**63 - 1),
    "UINT8": (0, 2**8 - 1),
    "UINT16": (0, 2**16 - 1),
    "UINT32": (0, 2**32 - 1),
    "UINT64": (0, 2**64 - 1),
}
_FLOAT_LIMITS = {"FP16": 65504.0, "FP32": _MAX_FP32, "FP64": _MAX_DOUBLE}
DATATYPES = ("BOOL", *_INT_RANGES, *_FLOAT_LIMITS, "BYTES")
# Binary tensor data (Triton's extension): the little-endian array typecode of each datatype.
_TYPECODES = {
    "BOOL": "B",
    "INT8": "b",
    "INT16": "h",
    "INT32": "i",
    "INT64": "q",
    "UINT8": "B",
    "UINT16": "H",
    "UINT32": "I",
    "UINT64": "Q",
    "FP32": "f",
    "FP64": "d",
}
_NUMBER = frozenset({int, float})
_FLOAT = frozenset({float})


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    rows: list[list]
    outputs: tuple[str, ...]  # the output tensors asked for, in order; () for all


def parse_infer_request(
    data: Any,
    feature_names: tuple[str, ...],
    max_rows: int,
    outputs: tuple[str, ...],
    binary: bytes | None = None,
) -> InferRequest:
    """The rows of an inference request body (``data``, parsed JSON) for a model of
    ``feature_names`` that produces ``outputs``; ``binary``: the tensor bytes that followed
    the JSON (binary tensor data extension), else None."""
    if not isinstance(data, dict):
        raise BadRequest("the inference request must be a JSON object")
    request_id = data.get("id")
    if request_id is not None and (
        not isinstance(request_id, str) or len(request_id) > MAX_REQUEST_ID
    ):
        raise BadRequest(f"'id' must be a string of at most {MAX_REQUEST_ID} characters")
    _parameters(data, "the request")
    inputs = data.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest(f"'inputs' must be a list holding the input tensor {INPUT!r}")
    for tensor in inputs:
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise BadRequest("each input must be an object with a string 'name'")
    names = [tensor["name"] for tensor in inputs]
    if INPUT not in names:
        raise BadRequest(
            f"missing input {INPUT!r} (got {', '.join(repr(clip(n)) for n in names[:5])}): "
            f"rows of {len(feature_names)} features ({', '.join(feature_names)})"
        )
    if len(inputs) > 1:
        extra = next(n for n in names if n != INPUT) if names.count(INPUT) == 1 else INPUT
        raise BadRequest(f"unexpected input {clip(extra)!r}: the model takes only {INPUT!r}")
    rows = _rows(inputs[0], len(feature_names), max_rows, binary)
    return InferRequest(request_id, rows, _requested(data.get("outputs"), outputs))


def _parameters(holder: dict, what: str) -> dict:
    parameters = holder.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise BadRequest(f"'parameters' of {what} must be an object")
    return parameters


def _requested(requested: Any, available: tuple[str, ...]) -> tuple[str, ...]:
    if requested is None:
        return ()
    if not isinstance(requested, list):
        raise BadRequest("'outputs' must be a list of objects with a 'name'")
    names = []
    for output in requested:
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            raise BadRequest("each requested output must be an object with a string 'name'")
        _parameters(output, f"output {clip(output['name'])!r}")
        if output["name"] not in available:
            raise BadRequest(
                f"unknown output {clip(output['name'])!r}; the model's outputs: "
                f"{', '.join(available)}"
            )
        names.append(output["name"])
    return tuple(dict.fromkeys(names))


def _rows(tensor: dict, width: int, max_rows: int, binary: bytes | None) -> list[list]:
    datatype = tensor.get("datatype")
    if datatype not in DATATYPES:
        raise BadRequest(
            f"unknown datatype {clip(str(datatype))!r} of input {INPUT!r}; "
            f"one of {', '.join(DATATYPES)}"
        )
    if datatype == "BYTES":
        raise BadRequest(f"input {INPUT!r} must hold numbers, not BYTES")
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or not all(type(d) is int and d >= 0 for d in shape)
        or len(shape) != 2
        or shape[1] != width
    ):
        raise BadRequest(
            f"input {INPUT!r} must have shape [n, {width}] (n rows of {width} features), "
            f"got {clip(str(shape))}"
        )
    count = shape[0]
    if not 1 <= count <= max_rows:
        raise BadRequest(f"input {INPUT!r} must hold 1 to {max_rows} rows, got {count}")
    parameters = _parameters(tensor, f"input {INPUT!r}")
    if "binary_data_size" in parameters:
        flat = _from_binary(datatype, parameters["binary_data_size"], count * width, binary)
    elif binary:
        raise BadRequest(
            f"the request has {len(binary)} bytes of binary data but input {INPUT!r} has no "
            "'binary_data_size' parameter"
        )
    else:
        if "data" not in tensor:
            raise BadRequest(f"input {INPUT!r} has no 'data'")
        flat, rows = _flatten(tensor["data"], count, width)
        _check_values(flat, datatype)
        if rows is not None:
            return _as_float(rows, datatype)
    rows = list(map(list, zip(*[iter(flat)] * width, strict=True)))  # 2x a slice per row
    return _as_float(rows, datatype)


def _flatten(data: Any, count: int, width: int) -> tuple[list, list[list] | None]:
    """The values of ``data`` (flat, or nested as the shape), and the rows when it came as rows."""
    expected = count * width
    if not isinstance(data, list):
        raise BadRequest(f"'data' of input {INPUT!r} must be a list")
    if data and type(data[0]) is list:  # nested: [[...], ...], one list per row
        if len(data) != count or not all(type(row) is list and len(row) == width for row in data):
            raise BadRequest(
                f"nested 'data' of input {INPUT!r} must be {count} lists of {width} values, "
                "as its shape says (or give the values flat, row-major)"
            )
        return list(chain.from_iterable(data)), data
    if len(data) != expected:
        raise BadRequest(
            f"input {INPUT!r} has shape [{count}, {width}] ({expected} values) but its "
            f"'data' holds {len(data)}"
        )
    return data, None


def _check_values(flat: list, datatype: str) -> None:
    kinds = set(map(type, flat))
    if datatype == "BOOL":
        if kinds <= {bool}:
            return
        raise BadRequest(f"input {INPUT!r} is BOOL: its values must be true or false")
    if datatype in _INT_RANGES:
        low, high = _INT_RANGES[datatype]
        if not kinds <= {int}:
            found = next(v for v in flat if type(v) is not int)
            raise BadRequest(
                f"input {INPUT!r} is {datatype}: {clip(repr(found))} is not an integer"
            )
        if flat and (min(flat) < low or max(flat) > high):
            raise BadRequest(f"input {INPUT!r} holds a value out of the {datatype} range")
        return
    if not kinds <= _NUMBER:
        found = next(v for v in flat if type(v) not in _NUMBER)
        raise BadRequest(f"input {INPUT!r} is {datatype}: {clip(repr(found))} is not a number")
    if datatype == "FP64" and kinds <= _FLOAT:  # parsed JSON floats are finite doubles
        return
    limit = _FLOAT_LIMITS[datatype]
    if flat and (min(flat) < -limit or max(flat) > limit):
        raise BadRequest(f"input {INPUT!r} holds a value out of the {datatype} range")


def _as_float(rows: list[list], datatype: str) -> list[list]:
    """Rows of numbers: the workers read them as float64; booleans become 0.0 and 1.0 here."""
    if datatype == "BOOL":
        return [[float(v) for v in row] for row in rows]
    return rows


def _from_binary(datatype: str, size: Any, count: int, binary: bytes | None) -> list:
    """The values of a tensor sent as raw little-endian bytes after the JSON."""
    if binary is None:
        raise BadRequest(
            f"input {INPUT!r} says 'binary_data_size' but the request has no binary part "
            "(header Inference-Header-Content-Length)"
        )
    typecode = _TYPECODES.get(datatype)
    if typecode is None:
        raise BadRequest(f"binary data of datatype {datatype} is not supported")
    values = array(typecode)
    if type(size) is not int or size != len(binary) or size != count * values.itemsize:
        raise BadRequest(
            f"input {INPUT!r}: 'binary_data_size' must be the {len(binary)} bytes that follow "
            f"the JSON, {count} values of {values.itemsize} bytes"
        )
    values.frombytes(binary)
    if array("H", [1]).tobytes() != b"\x01\x00":  # a big-endian host: the wire is little
        values.byteswap()
    flat = values.tolist()
    if typecode in "fd" and not all(map(math.isfinite, flat)):
        raise BadRequest(f"input {INPUT!r} holds NaN or infinity")
    return flat


# -- answers --------------------------------------------------------------------------------
def label_datatype(sample: Any) -> str:
    """The datatype of labels like ``sample`` (a class, or a regressor's value)."""
    if isinstance(sample, str):
        return "BYTES"
    if isinstance(sample, bool):
        return "BOOL"
    if isinstance(sample, int):
        return "INT64"
    return "FP64"


def output_tensors(record: dict, outputs: tuple[str, ...]) -> list[dict]:
    """A finished job's predictions as output tensors; ``outputs``: those asked for (() all)."""
    predictions = record.get("predictions") or []
    probabilities = record.get("probabilities")
    count = len(predictions)
    tensors = []
    for name in outputs or (LABEL, PROBABILITIES):
        if name == LABEL:
            sample = predictions[0] if predictions else None
            tensors.append(
                {
                    "name": LABEL,
                    "shape": [count],
                    "datatype": label_datatype(sample),
                    "data": predictions,
                }
            )
        elif probabilities is not None:
            width = len(probabilities[0]) if probabilities else 0
            tensors.append(
                {
                    "name": PROBABILITIES,
                    "shape": [count, width],
                    "datatype": "FP64",
                    "data": list(chain.from_iterable(probabilities)),
                }
            )
        elif outputs:  # asked for by name: say why it is not there
            raise BadRequest(
                f"model {record.get('model_name')} v{record.get('model_version')} gives no "
                f"{PROBABILITIES!r} (its estimator has no predict_proba)"
            )
    return tensors

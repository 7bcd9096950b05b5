"""app/services/tensors.py: an Open Inference Protocol request into rows, a result into outputs.

Written from the specification's text (specification/protocol/inference_rest.md of
kserve/open-inference-protocol): data flat or nested, row-major; datatypes; the outputs asked for.
"""

from __future__ import annotations

from array import array

import pytest

from app.errors import BadRequest
from app.services.tensors import (
    INPUT,
    LABEL,
    PROBABILITIES,
    label_datatype,
    output_tensors,
    parse_infer_request,
)

NAMES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
OUTPUTS = (LABEL, PROBABILITIES)
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


def request(data=None, shape=None, datatype="FP64", **fields) -> dict:
    data = [v for row in ROWS for v in row] if data is None else data
    tensor = {"name": INPUT, "shape": shape or [2, 4], "datatype": datatype, "data": data}
    return {"inputs": [tensor], **fields}


def parse(body, max_rows=1000, binary=None):
    return parse_infer_request(body, NAMES, max_rows, OUTPUTS, binary)


def refused(body, max_rows=1000, binary=None) -> str:
    with pytest.raises(BadRequest) as info:
        parse(body, max_rows, binary)
    return info.value.message


# -- accepted ---------------------------------------------------------------------------------
def test_flat_data_is_read_row_major():
    parsed = parse(request(id="42"))
    assert parsed.rows == ROWS
    assert parsed.id == "42"
    assert parsed.outputs == ()


def test_nested_data_is_read_as_its_rows():
    assert parse(request(data=ROWS)).rows == ROWS


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64"])
def test_float_datatypes_take_integers_and_floats(datatype):
    assert parse(request(data=[5, 3.5, 1, 0.2], shape=[1, 4], datatype=datatype)).rows == [
        [5, 3.5, 1, 0.2]
    ]


@pytest.mark.parametrize("datatype", ["INT8", "INT16", "INT32", "INT64", "UINT8", "UINT64"])
def test_integer_datatypes_take_integers(datatype):
    assert parse(request(data=[[5, 3, 1, 0]], shape=[1, 4], datatype=datatype)).rows == [
        [5, 3, 1, 0]
    ]


def test_bool_values_become_numbers():
    body = request(data=[True, False, True, True], shape=[1, 4], datatype="BOOL")
    assert parse(body).rows == [[1.0, 0.0, 1.0, 1.0]]


def test_outputs_asked_for_are_kept_in_order_once():
    body = request(outputs=[{"name": PROBABILITIES}, {"name": LABEL}, {"name": LABEL}])
    assert parse(body).outputs == (PROBABILITIES, LABEL)


def test_parameters_are_accepted_and_ignored():
    body = request(parameters={"content_type": "np", "x": 1, "y": True})
    body["inputs"][0]["parameters"] = {"content_type": "np"}
    assert parse(body).rows == ROWS


@pytest.mark.parametrize(("datatype", "code"), [("FP64", "d"), ("FP32", "f"), ("INT64", "q")])
def test_binary_tensor_data_after_the_json(datatype, code):
    raw = array(code, [1, 2, 3, 4, 5, 6, 7, 8]).tobytes()
    body = request(data=[], datatype=datatype)
    del body["inputs"][0]["data"]
    body["inputs"][0]["parameters"] = {"binary_data_size": len(raw)}
    assert parse(body, binary=raw).rows == [[1, 2, 3, 4], [5, 6, 7, 8]]


# -- refused: each a 400 naming the problem ---------------------------------------------------
@pytest.mark.parametrize(
    ("body", "says"),
    [
        ([1, 2], "must be a JSON object"),
        ({}, "'inputs' must be a list"),
        ({"inputs": []}, "'inputs' must be a list"),
        ({"inputs": [{"shape": [1, 4]}]}, "string 'name'"),
        (request(id=7), "'id' must be a string"),
        (request(parameters=[1]), "'parameters' of the request must be an object"),
    ],
)
def test_malformed_requests(body, says):
    assert says in refused(body)


def test_a_missing_input_is_named():
    body = request()
    body["inputs"][0]["name"] = "features"
    message = refused(body)
    assert f"missing input {INPUT!r}" in message
    assert "'features'" in message
    assert "sepal_length" in message


def test_a_second_input_is_refused():
    body = request()
    body["inputs"].append({**body["inputs"][0], "name": "input-1"})
    assert "unexpected input 'input-1'" in refused(body)


@pytest.mark.parametrize("datatype", ["FLOAT", "fp64", None, 3])
def test_an_unknown_datatype_is_named(datatype):
    assert "unknown datatype" in refused(request(datatype=datatype))


def test_bytes_are_not_numbers():
    assert "not BYTES" in refused(request(data=["a"] * 8, datatype="BYTES"))


@pytest.mark.parametrize(
    ("data", "datatype", "says"),
    [
        ([5.5, 3, 1, 0] * 2, "INT64", "5.5 is not an integer"),
        ([True, 3, 1, 0] * 2, "INT32", "True is not an integer"),
        (["5.1", 3.5, 1.4, 0.2] * 2, "FP32", "'5.1' is not a number"),
        ([None, 3.5, 1.4, 0.2] * 2, "FP64", "None is not a number"),
        ([True, 3.5, 1.4, 0.2] * 2, "FP64", "True is not a number"),
        ([1, 0, 1, 1] * 2, "BOOL", "values must be true or false"),
        ([300, 1, 1, 1] * 2, "UINT8", "out of the UINT8 range"),
        ([-1, 1, 1, 1] * 2, "UINT32", "out of the UINT32 range"),
        ([2**63, 1, 1, 1] * 2, "INT64", "out of the INT64 range"),
        ([1e39, 1, 1, 1] * 2, "FP32", "out of the FP32 range"),
        ([10**400, 1, 1, 1] * 2, "FP64", "out of the FP64 range"),
    ],
)
def test_values_that_do_not_match_the_datatype(data, datatype, says):
    assert says in refused(request(data=data, datatype=datatype))


@pytest.mark.parametrize(
    ("shape", "data"),
    [
        ([2, 4], [1.0] * 7),  # fewer values than the shape holds
        ([2, 4], [1.0] * 9),
        ([3, 4], [1.0] * 8),
    ],
)
def test_a_shape_that_does_not_match_the_data_length(shape, data):
    message = refused(request(data=data, shape=shape))
    assert f"its 'data' holds {len(data)}" in message


@pytest.mark.parametrize(
    "data",
    [
        [[1.0] * 4],  # one row where the shape says two
        [[1.0] * 4, [1.0] * 3],
        [[1.0] * 4, 1.0, 1.0, 1.0, 1.0],
        [[1.0] * 8],
    ],
)
def test_nested_data_must_follow_the_shape(data):
    assert "must be 2 lists of 4 values" in refused(request(data=data))


@pytest.mark.parametrize("shape", [[8], [2, 3], [2, 5], [1, 2, 4], [2, -4], [2.0, 4], "2,4", None])
def test_a_shape_with_the_wrong_number_of_features(shape):
    body = request()
    body["inputs"][0]["shape"] = shape
    assert "must have shape [n, 4]" in refused(body)


def test_rows_are_bounded():
    assert "1 to 1 rows, got 2" in refused(request(), max_rows=1)
    assert "1 to 1000 rows, got 0" in refused(request(data=[], shape=[0, 4]))


def test_data_must_be_a_list():
    assert "'data' of input 'input-0' must be a list" in refused(request(data="1,2,3,4"))


def test_an_unknown_output_is_named():
    message = refused(request(outputs=[{"name": "predict_proba"}]))
    assert "unknown output 'predict_proba'" in message
    assert "label, probabilities" in message


def test_outputs_must_be_objects_with_names():
    assert "'outputs' must be a list" in refused(request(outputs={"name": LABEL}))
    assert "string 'name'" in refused(request(outputs=[LABEL]))


def test_binary_data_must_match_its_declared_size():
    raw = array("d", [1.0] * 8).tobytes()
    body = request(data=[])
    del body["inputs"][0]["data"]
    body["inputs"][0]["parameters"] = {"binary_data_size": len(raw)}
    assert "no binary part" in refused(body)
    assert "'binary_data_size' must be" in refused(body, binary=raw[:-8])
    assert "no 'binary_data_size'" in refused(request(), binary=raw)


def test_binary_floats_must_be_finite():
    raw = array("d", [float("nan")] + [1.0] * 7).tobytes()
    body = request(data=[])
    body["inputs"][0]["parameters"] = {"binary_data_size": len(raw)}
    assert "NaN or infinity" in refused(body, binary=raw)


# -- answers ----------------------------------------------------------------------------------
RECORD = {
    "model_name": "iris",
    "model_version": 2,
    "predictions": ["setosa", "virginica"],
    "probabilities": [[0.9, 0.1, 0.0], [0.0, 0.2, 0.8]],
    "classes": ["setosa", "versicolor", "virginica"],
}


def test_both_outputs_by_default_probabilities_flat_row_major():
    label, probabilities = output_tensors(RECORD, ())
    assert label == {
        "name": LABEL,
        "shape": [2],
        "datatype": "BYTES",
        "data": RECORD["predictions"],
    }
    assert probabilities == {
        "name": PROBABILITIES,
        "shape": [2, 3],
        "datatype": "FP64",
        "data": [0.9, 0.1, 0.0, 0.0, 0.2, 0.8],
    }


def test_only_the_outputs_asked_for_in_their_order():
    assert [t["name"] for t in output_tensors(RECORD, (PROBABILITIES,))] == [PROBABILITIES]
    assert [t["name"] for t in output_tensors(RECORD, (PROBABILITIES, LABEL))] == [
        PROBABILITIES,
        LABEL,
    ]


def test_a_model_without_probabilities():
    record = {**RECORD, "predictions": [1.5, 2.5]}
    del record["probabilities"]
    [label] = output_tensors(record, ())
    assert label["datatype"] == "FP64"
    with pytest.raises(BadRequest, match="no predict_proba"):
        output_tensors(record, (PROBABILITIES,))


@pytest.mark.parametrize(
    ("sample", "datatype"), [("a", "BYTES"), (1, "INT64"), (True, "BOOL"), (0.5, "FP64")]
)
def test_label_datatypes(sample, datatype):
    assert label_datatype(sample) == datatype

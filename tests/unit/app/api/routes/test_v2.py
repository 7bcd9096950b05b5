"""app/api/routes/v2.py: the answer to a finished, failed or unfinished job; the binary part
of a body; version numbers; and the OpenAPI description against the hand parser."""

from __future__ import annotations

import orjson
import pytest
from starlette.requests import Request

from app.api.routes import v2
from app.errors import BadRequest, JobFailed, ResultTimeout
from app.main import create_app
from app.services.dataplane import Outcome
from app.services.tensors import LABEL, PROBABILITIES, InferRequest, parse_infer_request
from core.errors import ModelNotFound
from core.settings import get_settings

SUCCESS = {
    "job_id": "j1",
    "status": "SUCCESS",
    "model_name": "iris",
    "model_version": 3,
    "api_version": "0.1.0",
    "predictions": ["setosa"],
    "probabilities": [[0.9, 0.1, 0.0]],
    "classes": ["setosa", "versicolor", "virginica"],
}


def outcome(record: dict | None, replayed: bool = False) -> Outcome:
    return Outcome("j1", None, orjson.dumps(record) if record else None, replayed)


def test_a_finished_job_is_an_inference_response():
    response = v2.infer_answer(outcome(SUCCESS), InferRequest("42", [], ()), 30)
    body = orjson.loads(response.body)
    assert body["model_name"] == "iris"
    assert body["model_version"] == "3"  # a string, as the specification says
    assert body["id"] == "42"
    assert body["parameters"] == {"api_version": "0.1.0", "job_id": "j1"}
    assert [t["name"] for t in body["outputs"]] == [LABEL, PROBABILITIES]
    assert "idempotent-replayed" not in response.headers


def test_without_an_id_the_job_id_is_echoed_and_a_replay_is_marked():
    response = v2.infer_answer(outcome(SUCCESS, True), InferRequest(None, [], (LABEL,)), 30)
    body = orjson.loads(response.body)
    assert body["id"] == "j1"
    assert [t["name"] for t in body["outputs"]] == [LABEL]
    assert response.headers["idempotent-replayed"] == "true"


def test_a_job_not_finished_in_time_is_a_504_naming_it():
    with pytest.raises(ResultTimeout) as info:
        v2.infer_answer(outcome(None), InferRequest(None, [], ()), 30)
    assert info.value.status_code == 504
    assert "job j1 did not finish within 30 s" in info.value.message
    assert "GET /jobs/j1" in info.value.message


@pytest.mark.parametrize(
    ("reason", "status"),
    [("schema_mismatch", 400), ("prediction_error", 400), ("expired", 503), ("worker_lost", 503)],
)
def test_a_failed_job_says_why(reason, status):
    failed = {"job_id": "j1", "status": "FAILURE", "error": {"reason": reason, "message": "m"}}
    with pytest.raises(JobFailed) as info:
        v2.infer_answer(outcome(failed), InferRequest(None, [], ()), 30)
    assert info.value.status_code == status
    assert f"job j1 failed ({reason}): m" == info.value.message


def request(headers: dict) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "headers": raw})


def test_the_binary_part_follows_the_declared_json_length():
    body = b'{"inputs": []}' + b"\x00" * 8
    assert v2._split_binary(request({}), body) == (body, None)
    head, binary = v2._split_binary(request({v2.BINARY_HEADER: "14"}), body)
    assert (head, binary) == (b'{"inputs": []}', b"\x00" * 8)
    for declared in ("x", "-1", "99", "\u0661", "1" * 5000):
        with pytest.raises(BadRequest, match=v2.BINARY_HEADER):
            v2._split_binary(request({v2.BINARY_HEADER: declared}), body)


class Catalog:
    name = "iris"


@pytest.mark.parametrize(
    "version", ["0", "v1", "-1", "1.0", "", "\u0661", "9" * 10, "9" * 5000], ids=lambda v: v[:12]
)
def test_a_version_that_is_not_a_number_in_range_is_not_found(version):
    with pytest.raises(ModelNotFound):
        v2._version_number(Catalog(), version)


def test_version_numbers():
    assert v2._version_number(Catalog(), "1") == 1
    assert v2._version_number(Catalog(), str(v2.MAX_VERSION)) == v2.MAX_VERSION


# -- the OpenAPI description ------------------------------------------------------------------
@pytest.fixture(scope="module")
def spec() -> dict:
    return create_app(get_settings()).openapi()


def test_every_v2_route_is_documented(spec):
    paths = {p: set(ops) for p, ops in spec["paths"].items() if p.startswith("/v2")}
    assert paths == {
        "/v2": {"get"},
        "/v2/health/live": {"get"},
        "/v2/health/ready": {"get"},
        "/v2/models/{name}": {"get"},
        "/v2/models/{name}/versions/{version}": {"get"},
        "/v2/models/{name}/ready": {"get"},
        "/v2/models/{name}/versions/{version}/ready": {"get"},
        "/v2/models/{name}/infer": {"post"},
        "/v2/models/{name}/versions/{version}/infer": {"post"},
    }
    infer = spec["paths"]["/v2/models/{name}/infer"]["post"]
    assert set(infer["responses"]) >= {"200", "400", "401", "404", "413", "429", "503", "504"}
    error = spec["components"]["schemas"]["V2Error"]
    assert error["required"] == ["error"]


def test_the_documented_request_limits_are_the_parsers(spec):
    schema = spec["components"]["schemas"]["V2InferenceRequest"]
    longest = next(s for s in schema["properties"]["id"]["anyOf"] if s["type"] == "string")
    assert schema["properties"]["inputs"]["maxItems"] == 1
    tensor = {"name": "input-0", "shape": [1, 1], "datatype": "FP64", "data": [1.0]}
    body = {"id": "i" * longest["maxLength"], "inputs": [tensor]}
    assert parse_infer_request(body, ("a",), 10, (LABEL,)).id == body["id"]
    with pytest.raises(BadRequest, match="'id' must be a string"):
        parse_infer_request({**body, "id": body["id"] + "i"}, ("a",), 10, (LABEL,))
    with pytest.raises(BadRequest, match="unexpected input"):
        parse_infer_request({**body, "inputs": [tensor, tensor]}, ("a",), 10, (LABEL,))

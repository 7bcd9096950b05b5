"""POST /predict's OpenAPI description matches what its hand parser accepts.

The requests are served by app/api/routes/predict.py ``serve``; the documented FastAPI route
declares the same parameters. Each documented limit is checked against the parser: its value
is accepted, one beyond it refused, naming the same parameter.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from starlette.requests import Request

from app.api.routes import predict
from app.errors import BadRequest
from app.main import create_app
from app.services.predictions import idempotency_header
from app.services.rows import parse_predict_body
from core.settings import get_settings

MAX_WAIT = 30.0  # the ceiling _wait_param is given (api.max_wait_seconds)


@pytest.fixture
def spec() -> dict:
    return create_app(get_settings()).openapi()


@pytest.fixture
def operation(spec) -> dict:
    return spec["paths"]["/predict"]["post"]


def resolve(spec: dict, schema: dict) -> dict:
    ref = schema.get("$ref")
    return spec["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else schema


def non_null(schema: dict) -> dict:
    """The schema of an optional parameter without its ``null`` alternative."""
    [kept] = [s for s in schema.get("anyOf", [schema]) if s.get("type") != "null"]
    return kept


def parameters(operation) -> dict:
    return {(p["in"], p["name"]): p for p in operation["parameters"]}


def request(query: str = "", headers: dict | None = None) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return Request({"type": "http", "query_string": query.encode(), "headers": raw})


def test_both_body_forms_are_documented_with_the_parsers_request_id_limit(spec, operation):
    assert operation["requestBody"]["required"] is True
    forms = operation["requestBody"]["content"]["application/json"]["schema"]["anyOf"]
    schemas = {s["title"]: s for s in (resolve(spec, form) for form in forms)}
    assert schemas.keys() == {"PredictSingle", "PredictBatch"}
    assert schemas["PredictBatch"]["required"] == ["instances"]
    limits = {non_null(s["properties"]["request_id"])["maxLength"] for s in schemas.values()}
    [longest] = limits
    production = SimpleNamespace(feature_names=("a", "b"))  # all a batch of lists needs of it
    body = {"request_id": "r" * longest, "instances": [[1.0, 2.0]]}
    assert parse_predict_body(body, production, 10)[0] == body["request_id"]
    with pytest.raises(BadRequest) as info:
        parse_predict_body({**body, "request_id": "r" * (longest + 1)}, production, 10)
    assert info.value.loc == ["body", "request_id"]


def test_every_parameter_is_documented_and_none_is_required(operation):
    documented = parameters(operation)
    assert documented.keys() == {
        ("query", "wait"),
        ("header", "Prefer"),
        ("header", "Idempotency-Key"),
    }
    assert not any(p["required"] for p in documented.values())
    assert all(p["description"] for p in documented.values())


def test_the_api_key_is_a_security_scheme_in_the_header_serve_reads(spec, operation):
    """One Authorize button in /docs, for the header serve() authorizes with."""
    [requirement] = operation["security"]
    [name] = requirement
    scheme = spec["components"]["securitySchemes"][name]
    assert scheme == {**scheme, "type": "apiKey", "in": "header", "name": predict.API_KEY}
    assert scheme["description"]


def test_the_documented_wait_minimum_is_the_parsers(operation):
    minimum = non_null(parameters(operation)[("query", "wait")]["schema"])["minimum"]
    assert predict._wait_param(request(f"wait={minimum}"), MAX_WAIT) == minimum
    with pytest.raises(BadRequest) as info:
        predict._wait_param(request(f"wait={minimum - 0.5}"), MAX_WAIT)
    assert info.value.loc == ["query", "wait"]


def test_the_documented_idempotency_key_lengths_are_the_parsers(operation):
    schema = non_null(parameters(operation)[("header", "Idempotency-Key")]["schema"])
    shortest, longest = schema["minLength"], schema["maxLength"]
    for length in (shortest, longest):
        key = "k" * length
        assert idempotency_header(request(headers={"Idempotency-Key": key})) == key
    for length in (shortest - 1, longest + 1):
        with pytest.raises(BadRequest) as info:
            idempotency_header(request(headers={"Idempotency-Key": "k" * length}))
        assert info.value.loc == ["header", "Idempotency-Key"]


def test_every_answer_is_documented(operation):
    assert set(operation["responses"]) == {
        "200",
        "202",
        "401",
        "403",
        "408",
        "409",
        "413",
        "415",
        "422",
        "429",
        "503",
    }

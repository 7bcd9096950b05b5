"""Bad input over real HTTP: each gets its status code and a message naming the problem.

No client input may produce a 500, lose an accepted job or break the service: a good request
still succeeds after all of them.
"""

from __future__ import annotations

import time

import orjson
import pytest

from tests.integration.stack import SEED_BODY, poll_job

pytestmark = pytest.mark.integration

ROW = {k: v for k, v in SEED_BODY.items() if k != "request_id"}
MAX_INSTANCES = 1000  # settings.toml api.max_instances
MAX_BODY_BYTES = 1_048_576  # settings.toml api.max_body_bytes
JSON = {"Content-Type": "application/json"}


def post_raw(client, body: bytes, headers=JSON, **kwargs):
    return client.post("/predict", content=body, headers=headers, **kwargs)


def assert_422_at(response, loc: list, *words: str) -> dict:
    assert response.status_code == 422, response.text
    assert response.json()["reason"] == "invalid_request", response.text  # like every error
    detail = response.json()["detail"][0]
    assert detail["loc"] == loc, detail
    for word in words:
        assert word in detail["msg"], detail
    return detail


@pytest.mark.parametrize(
    ("body", "loc", "words"),
    [
        (
            {k: v for k, v in SEED_BODY.items() if k != "petal_width"},
            ["body", "petal_width"],
            ["missing", "petal_width"],
        ),
        ({**SEED_BODY, "colour": 1.0}, ["body", "colour"], ["unknown", "colour"]),
        ({**SEED_BODY, "sepal_length": "5.1"}, ["body", "sepal_length"], ["number", "str"]),
        ({**SEED_BODY, "sepal_length": "١٢"}, ["body", "sepal_length"], ["number", "str"]),
        ({**SEED_BODY, "sepal_length": None}, ["body", "sepal_length"], ["number"]),
        ({**SEED_BODY, "sepal_length": True}, ["body", "sepal_length"], ["number", "bool"]),
        ({**SEED_BODY, "request_id": 42}, ["body", "request_id"], ["string"]),
        ({"instances": []}, ["body", "instances"], ["at least one"]),
        ({"instances": ROW}, ["body", "instances"], ["list"]),
        ({"instances": [ROW, [1, 2, 3]]}, ["body", "instances", 1], ["expected 4 values"]),
        ({"instances": [ROW, "x"]}, ["body", "instances", 1], ["object", "list"]),
        (
            {"instances": [ROW] * (MAX_INSTANCES + 1)},
            ["body", "instances"],
            [f"at most {MAX_INSTANCES}", f"got {MAX_INSTANCES + 1}"],
        ),
        ([ROW], ["body"], ["JSON object"]),
    ],
)
def test_invalid_features_are_422_naming_the_field(stack, body, loc, words):
    with stack.client() as client:
        response = client.post("/predict", json=body)
    assert_422_at(response, loc, *words)


@pytest.mark.parametrize(
    ("raw", "loc"),
    [
        (b'{"sepal_length": NaN, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}',
         ["body", "sepal_length"]),
        (b'{"sepal_length": 5.1, "sepal_width": 1e999, "petal_length": 1.4, "petal_width": 0.2}',
         ["body", "sepal_width"]),
        (b'{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": -Infinity, '
         b'"petal_width": 0.2}', ["body", "petal_length"]),
        (b'{"instances": [[5.1, 3.5, 1.4, ' + str(10**400).encode() + b"]]}",
         ["body", "instances", 0, 3]),
    ],
)  # fmt: skip
def test_non_finite_and_huge_numbers_are_422_at_their_field(stack, raw, loc):
    with stack.client() as client:
        response = post_raw(client, raw)
    assert_422_at(response, loc, "finite number")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b'{"sepal_length": 5.1,}',
        b"{'sepal_length': 5.1}",
        b'{"sepal_length": \xd9\xa1\xd9\xa2}',  # unicode digits as a bare number
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 5000 + b"1" + b"}" * 5000,
    ],
    ids=["empty", "truncated", "trailing-comma", "single-quotes", "unicode-digits", "deep-list",
         "deep-object"],
)  # fmt: skip
def test_malformed_json_is_422_invalid_json(stack, raw):
    with stack.client() as client:
        response = post_raw(client, raw)
    detail = assert_422_at(response, ["body"], "invalid JSON")
    assert detail["type"] == "json_invalid"


@pytest.mark.parametrize(
    "headers",
    [{"Content-Type": "text/plain"}, {"Content-Type": "application/x-www-form-urlencoded"}, {}],
)
def test_a_body_that_is_not_declared_json_is_415(stack, headers):
    with stack.client() as client:
        response = post_raw(client, orjson.dumps(SEED_BODY), headers=headers)
    assert response.status_code == 415, response.text
    assert "application/json" in response.json()["detail"]


def test_a_body_over_the_limit_is_413_by_content_length(stack):
    body = b'{"instances": [' + b"[5.1, 3.5, 1.4, 0.2]," * (MAX_BODY_BYTES // 20) + b"]}"
    assert len(body) > MAX_BODY_BYTES
    with stack.client() as client:
        response = post_raw(client, body)
    assert response.status_code == 413, response.text
    assert str(MAX_BODY_BYTES) in response.json()["detail"]


def test_a_body_over_the_limit_is_413_when_chunked(stack):
    chunk = b" " * 65536

    def chunks():
        yield b'{"instances": ['
        for _ in range(MAX_BODY_BYTES // len(chunk) + 2):
            yield chunk

    with stack.client() as client:
        response = post_raw(client, chunks())
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.status_code == 413, response.text
    assert str(MAX_BODY_BYTES) in response.json()["detail"]


@pytest.mark.parametrize(
    ("params", "headers", "loc"),
    [
        ({"wait": -1}, {}, ["query", "wait"]),
        ({"wait": "soon"}, {}, ["query", "wait"]),
        ({}, {"Idempotency-Key": "k" * 201}, ["header", "Idempotency-Key"]),
    ],
)
def test_invalid_query_and_headers_are_422(stack, params, headers, loc):
    with stack.client() as client:
        response = client.post("/predict", params=params, headers=headers, json=SEED_BODY)
    assert_422_at(response, loc)


def test_unknown_job_path_and_method(stack):
    with stack.client() as client:
        job = client.get("/jobs/00000000-0000-0000-0000-000000000000")
        long_job = client.get("/jobs/" + "x" * 500)
        path = client.get("/no-such-path")
        method = client.get("/predict")
        delete = client.delete("/jobs/abc")
    assert job.status_code == 404 and "unknown job id" in job.json()["detail"]
    assert long_job.status_code == 404 and "unknown job id" in long_job.json()["detail"]
    assert path.json() == {"detail": "Not Found", "reason": "not_found"}
    assert path.status_code == 404
    assert method.json() == {"detail": "Method Not Allowed", "reason": "method_not_allowed"}
    assert method.status_code == 405
    assert "POST" in method.headers["allow"]
    assert delete.status_code == 405


def test_after_the_bad_inputs_a_good_request_still_succeeds(stack):
    """Runs after the tests above (file order): the service is not broken by them."""
    with stack.client() as client:
        synced = client.post("/predict", params={"wait": 10}, json=SEED_BODY)
        accepted = client.post("/predict", json={"instances": [ROW, list(ROW.values())]})
        assert synced.status_code == 200, synced.text
        assert synced.json()["predictions"] == ["setosa"]
        assert accepted.status_code == 202, accepted.text
        result = poll_job(client, accepted.json()["job_id"])
    assert result["predictions"] == ["setosa", "setosa"]
    assert "Traceback" not in stack.services["gateway"].output()
    assert "Exception in ASGI application" not in stack.services["gateway"].output()


# -- broken dependencies ---------------------------------------------------------------------
@pytest.mark.serial
def test_redis_down_is_503_quickly_and_not_ready(fresh_stack):
    fresh_stack.start_redis()
    assert fresh_stack.train().returncode == 0
    fresh_stack.start_gateway()
    with fresh_stack.client() as client:
        assert client.post("/predict", json=SEED_BODY).status_code == 202
        fresh_stack.redis.stop()
        answers = []
        for params in ({}, {"wait": 5}):
            started = time.monotonic()
            response = client.post("/predict", params=params, json=SEED_BODY)
            elapsed = time.monotonic() - started
            assert response.status_code == 503, response.text
            assert elapsed < 3.0, elapsed
            assert response.headers["retry-after"]
            answers.append(response.json())
        started = time.monotonic()
        ready = client.get("/ready")
        assert time.monotonic() - started < 3.0
        job = client.get("/jobs/anything")
    # The first request may meet the connection Redis closed as it stopped: whether a write
    # sent there ran cannot be known, so it says so and names the job. A refused connection
    # is certain: nothing was queued.
    first, last = answers
    if first["reason"] == "outcome_unknown":
        assert "may or may not have been queued" in first["detail"] and first["job_id"]
    else:
        assert "nothing was queued" in first["detail"]
    assert "Redis is unavailable" in last["detail"] and "nothing was queued" in last["detail"]
    assert ready.status_code == 503
    assert any("Redis" in reason for reason in ready.json()["reasons"])
    assert job.status_code == 503


def test_no_production_model_is_503_saying_to_train_one(fresh_stack):
    fresh_stack.start_redis()
    fresh_stack.start_gateway()  # no `python -m training train`
    with fresh_stack.client() as client:
        response = client.post("/predict", json=SEED_BODY)
        ready = client.get("/ready")
        version = client.get("/version")
    assert response.status_code == 503, response.text
    assert "no production model" in response.json()["detail"]
    assert "train" in response.json()["detail"]
    assert ready.status_code == 503
    assert any("train one" in reason for reason in ready.json()["reasons"])
    assert version.json()["model_version"] is None

"""app/errors.py: what a Redis failure lets the gateway promise about a write; every error
answer's ``reason``; the V2 shape."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import redis.exceptions
from fastapi import FastAPI
from redis.asyncio.sentinel import MasterNotFoundError
from starlette.testclient import TestClient

from app.errors import (
    AuthError,
    BadRequest,
    NotReplicated,
    OutcomeUnknown,
    TooManyRequests,
    install_error_handlers,
    never_ran,
)


@pytest.mark.parametrize(
    "exc",
    [
        redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Refused."),
        redis.exceptions.TimeoutError("Timeout connecting to server"),
        redis.exceptions.OutOfMemoryError("OOM command not allowed"),
        redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"),
        redis.exceptions.ResponseError("WRONGTYPE Operation against a key"),
        MasterNotFoundError("No master found for 'mymaster'"),
    ],
    ids=["refused", "connect-timeout", "oom", "loading", "error-reply", "no-primary"],
)
def test_refusals_before_the_command_ran_are_known_to_have_queued_nothing(exc):
    assert never_ran(exc)


@pytest.mark.parametrize(
    "exc",
    [
        redis.exceptions.TimeoutError("Timeout reading from socket"),
        redis.exceptions.ConnectionError("Connection closed by server."),
        redis.exceptions.ConnectionError("Error while reading from 127.0.0.1:6379"),
    ],
    ids=["read-timeout", "closed", "read-error"],
)
def test_a_lost_answer_leaves_the_outcome_unknown(exc):
    assert not never_ran(exc)


def test_an_unknown_outcome_names_the_job_to_look_up():
    error = OutcomeUnknown("job-1", redis.exceptions.TimeoutError("Timeout reading"))
    assert error.status_code == 503
    assert "job job-1 may or may not have been queued" in error.message
    assert "GET /jobs/job-1" in error.message


# -- the Open Inference Protocol's error shape on /v2 ----------------------------------------
def v2_app() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/v2/bad")
    async def bad():
        raise BadRequest("shape [2, 4] holds 8 values", ["body"])

    @app.get("/v2/header")
    async def header():
        raise BadRequest("must be 1 to 200 characters", ["header", "Idempotency-Key"])

    @app.get("/v2/busy")
    async def busy():
        raise TooManyRequests("the predict queue is full", 3)

    @app.get("/v2/key")
    async def key():
        raise AuthError("missing API key")

    @app.get("/v2/number/{n}")
    async def number(n: int):
        return {"n": n}

    @app.get("/predict-like")
    async def predict_like():
        raise BadRequest("missing feature(s): a", ["body", "a"], "missing")

    return TestClient(app)


def test_v2_errors_are_an_error_string_with_the_status_of_the_others():
    client = v2_app()
    bad = client.get("/v2/bad")
    assert (bad.status_code, bad.json()) == (400, {"error": "shape [2, 4] holds 8 values"})
    header = client.get("/v2/header")
    assert header.json() == {"error": "header.Idempotency-Key: must be 1 to 200 characters"}
    busy = client.get("/v2/busy")
    assert (busy.status_code, busy.headers["retry-after"]) == (429, "3")
    assert busy.json() == {"error": "the predict queue is full"}
    key = client.get("/v2/key")
    assert (key.status_code, key.json()) == (401, {"error": "missing API key"})
    assert client.get("/v2/number/x").status_code == 400
    assert "error" in client.get("/v2/number/x").json()
    missing = client.get("/v2/no/such/route")
    assert (missing.status_code, missing.json()) == (
        404,
        {"error": "Not Found: GET /v2/no/such/route"},
    )
    assert client.post("/v2/bad").json() == {"error": "Method Not Allowed: POST /v2/bad"}


def test_other_routes_keep_their_422_and_detail():
    client = v2_app()
    response = client.get("/predict-like")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "a"]
    assert client.get("/nothing").json() == {"detail": "Not Found", "reason": "not_found"}


def test_fastapis_own_422_404_405_carry_the_reason_every_error_has():
    """GET /models/abc answered {"detail": [...]} alone: a client switching on reason failed."""
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/models/{version}")
    async def version(version: int) -> dict:
        return {"version": version}

    async def get(path: str, method: str = "GET") -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path)

    response = asyncio.run(get("/models/abc"))
    assert response.status_code == 422
    body = response.json()
    assert body["reason"] == "invalid_request"
    assert body["detail"][0]["loc"] == ["path", "version"]
    # The router's own answers too: no route (a version beyond the path's pattern), a method.
    unmatched = asyncio.run(get("/models/1/2/3"))
    assert unmatched.status_code == 404
    assert unmatched.json() == {"detail": "Not Found", "reason": "not_found"}
    wrong_method = asyncio.run(get("/models/1", "DELETE"))
    assert wrong_method.status_code == 405
    assert wrong_method.json()["reason"] == "method_not_allowed"
    assert wrong_method.headers["allow"] == "GET"


def test_a_job_no_replica_confirmed_is_an_unknown_outcome_that_says_so():
    exc = NotReplicated("no replica acknowledged the job within 500 ms")
    assert not never_ran(exc)  # it is on the primary: it runs unless the primary dies
    error = OutcomeUnknown("job-1", exc)
    assert error.message.startswith(
        "Redis queued the job but no replica acknowledged the job within 500 ms: job job-1"
    )

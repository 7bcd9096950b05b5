"""app/errors.py: what a Redis failure lets the gateway promise about a write; every error
answer's ``reason``."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import redis.exceptions
from fastapi import FastAPI

from app.errors import OutcomeUnknown, install_error_handlers, never_ran


@pytest.mark.parametrize(
    "exc",
    [
        redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Refused."),
        redis.exceptions.TimeoutError("Timeout connecting to server"),
        redis.exceptions.OutOfMemoryError("OOM command not allowed"),
        redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"),
        redis.exceptions.ResponseError("WRONGTYPE Operation against a key"),
    ],
    ids=["refused", "connect-timeout", "oom", "loading", "error-reply"],
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

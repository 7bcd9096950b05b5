"""app/errors.py: what a Redis failure lets the gateway promise about a write."""

from __future__ import annotations

import pytest
import redis.exceptions
from redis.asyncio.sentinel import MasterNotFoundError

from app.errors import NotReplicated, OutcomeUnknown, never_ran


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


def test_a_job_no_replica_confirmed_is_an_unknown_outcome_that_says_so():
    exc = NotReplicated("no replica acknowledged the job within 500 ms")
    assert not never_ran(exc)  # it is on the primary: it runs unless the primary dies
    error = OutcomeUnknown("job-1", exc)
    assert error.message.startswith(
        "Redis queued the job but no replica acknowledged the job within 500 ms: job job-1"
    )

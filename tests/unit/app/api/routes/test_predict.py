"""wait_seconds: ``?wait=`` wins over ``Prefer: wait=``, both capped; answer: 200 or 202."""

from __future__ import annotations

import orjson
import pytest

from app.api.routes.predict import answer, wait_seconds
from app.services.dataplane import Outcome


@pytest.mark.parametrize(
    ("query", "prefer", "expected"),
    [
        (None, None, 0.0),
        (0.0, None, 0.0),
        (2.5, None, 2.5),
        (None, "wait=10", 10.0),
        (None, "respond-async, wait=4", 4.0),
        (None, "handling=lenient; wait = 1.5", 1.5),
        (None, "respond-async", 0.0),
        (None, "wait=", 0.0),
        (None, "nowait=5", 0.0),
        (None, "", 0.0),
        (3.0, "wait=10", 3.0),
        (0.0, "wait=10", 0.0),
        (100.0, None, 30.0),
        (None, "wait=100", 30.0),
        (None, "wait=" + "9" * 1_000_000, 30.0),
        (None, "x" * 1_000_000 + ", wait=5", 0.0),  # only the first 1,024 characters are read
    ],
    ids=lambda value: value[:40] if isinstance(value, str) else None,
)
def test_wait_seconds(query, prefer, expected):
    assert wait_seconds(query, prefer, 30.0) == expected


def test_answer_is_the_result_or_a_202_and_says_when_it_replays():
    done = answer(Outcome("j1", "r", b'{"status": "SUCCESS"}'))
    assert (done.status_code, done.body) == (200, b'{"status": "SUCCESS"}')
    assert "idempotent-replayed" not in done.headers
    queued = answer(Outcome("j1", "r", None, replayed=True))
    assert queued.status_code == 202
    assert queued.headers["location"] == "/jobs/j1"
    assert queued.headers["idempotent-replayed"] == "true"
    assert orjson.loads(queued.body) == {
        "job_id": "j1",
        "status": "PENDING",
        "request_id": "r",
        "location": "/jobs/j1",
        "deduplicated": True,
    }

"""wait_seconds: ``?wait=`` wins over ``Prefer: wait=``; both capped at the ceiling."""

from __future__ import annotations

import pytest

from app.api.routes.predict import wait_seconds


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

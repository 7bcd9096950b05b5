"""app/services/admission.py: 429 before the queue or Redis fills up, 503 near maxmemory."""

from __future__ import annotations

import pytest
import redis.exceptions

from app.errors import TooManyRequests
from app.services.admission import MIB, Admission


def admission(**readings) -> Admission:
    judge = Admission(
        max_queue_depth=100, max_queue_bytes=10 * MIB, memory_backpressure=0.8, retry_after=2
    )
    for name, value in readings.items():
        setattr(judge, name, value)
    return judge


def test_room_everywhere_admits():
    admission(queue_depth=99, queue_bytes=10 * MIB - 1, used_memory=79, maxmemory=100).check()


@pytest.mark.parametrize(
    ("readings", "words"),
    [
        ({"queue_depth": 100}, "holds 100 messages (limit 100)"),
        ({"queue_bytes": 10 * MIB}, "holds 10.0 MiB (limit 10.0 MiB)"),
        ({"used_memory": 80, "maxmemory": 100}, "80% of its maxmemory (backpressure from 80%)"),
    ],
    ids=["messages", "bytes", "memory"],
)
def test_a_full_queue_or_a_filling_redis_is_429_with_retry_after(readings, words):
    with pytest.raises(TooManyRequests) as refused:
        admission(**readings).check()
    assert words in refused.value.message
    assert refused.value.retry_after == 2


def test_near_maxmemory_is_503_before_anything_else():
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        admission(queue_depth=100, used_memory=90, maxmemory=100).check()


def test_a_redis_without_maxmemory_is_not_judged_on_memory():
    admission(used_memory=10**12, maxmemory=0).check()
    judge = admission()
    judge.observe_memory({"used_memory": "95", "maxmemory": "100"})
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        judge.check()

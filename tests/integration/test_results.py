"""workers/results.py: a message's results stored and announced in one command, its log entry
right behind, on a real redis-server (the ordering and ``maxmemory`` are Redis's, not
fakeredis's); workers/batches.py's attempt counts likewise past ``maxmemory``."""

from __future__ import annotations

import time

import orjson
import pytest
import redis

from core.jobs import attempts_key, batch_key, job_key
from core.messages import RESULTS_CHANNEL, unpack_results
from core.prediction_log import entry, read_recent, stream_key
from workers.batches import count_attempt
from workers.results import STORE_AND_PUBLISH, STORE_AND_PUBLISH_SHA, store_and_publish


def result(job_id: str) -> dict:
    return {"job_id": job_id, "status": "SUCCESS", "predictions": ["setosa"], "model_version": 1}


def log_of(job_ids: list[str]) -> tuple:
    n = len(job_ids)
    columns = (job_ids, [f"req-{i}" for i in job_ids], ["owner"] * n,
               [[[5.1, 3.5, 1.4, 0.2]]] * n, [["setosa"]] * n)  # fmt: skip
    return entry("iris", 1, 1.5, columns, 1000)


def next_message(subscriber, timeout: float = 5.0) -> dict | None:
    """The next published message (get_message answers None for the subscription's own)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = subscriber.get_message(timeout=deadline - time.monotonic())
        if message is not None:
            return message
    return None


@pytest.fixture
def client(redis_server):
    client = redis_server.client()
    client.script_load(STORE_AND_PUBLISH)
    return client


def test_each_result_is_stored_with_its_ttl_and_all_go_out_in_one_message(client):
    subscriber = client.pubsub(ignore_subscribe_messages=True)
    subscriber.subscribe(RESULTS_CHANNEL)
    results = [result(f"job-{i}") for i in range(3)]
    store_and_publish(client, results, 60)
    message = next_message(subscriber)
    ids, raws = unpack_results(message["data"])
    assert ids == ["job-0", "job-1", "job-2"]
    assert [orjson.loads(raw) for raw in raws] == results
    for item in results:
        assert orjson.loads(client.get(job_key(item["job_id"]))) == item
        assert 0 < client.ttl(job_key(item["job_id"])) <= 60
    assert next_message(subscriber, 0.3) is None  # one message, not one per job


def test_the_log_entry_is_written_before_the_answer_goes_out(client, redis_server):
    """So a label sent as soon as the answer arrives finds its prediction: Redis runs the
    entry's XADD before the PUBLISH that wakes the gateways (MONITOR shows the commands in the
    order Redis ran them, those of scripts included)."""
    with redis_server.client().monitor() as monitor:
        store_and_publish(client, [result("a")], 60, log_of(["a"]))
        ran: list[str] = []
        while "PUBLISH" not in ran:
            ran.append(monitor.next_command()["command"].split()[0].upper())
    assert [name for name in ran if name in ("XADD", "PUBLISH")] == ["XADD", "PUBLISH"]


def test_a_redis_that_forgot_the_script_gets_it_again(client):
    """Redis forgets scripts when it restarts: EVALSHA fails once, EVAL loads it."""
    client.script_flush()
    store_and_publish(client, [result("a")], 60, log_of(["a"]))
    assert client.get(job_key("a")) is not None
    assert [entry["job"] for entry in read_recent(client, "iris", 10)] == ["a"]
    assert client.script_exists(STORE_AND_PUBLISH_SHA) == [True]


def test_a_log_entry_redis_refuses_leaves_the_results_standing(client, warnings_logged):
    client.set(stream_key("iris"), "not a stream")  # WRONGTYPE for the XADD
    store_and_publish(client, [result("a")], 60, log_of(["a"]))
    assert client.get(job_key("a")) is not None
    assert any("prediction log entry not written" in text for text in warnings_logged)


def test_answers_and_attempt_counts_are_written_even_past_maxmemory(client):
    """Jobs accepted before Redis filled up still get their answers and their crash-safety
    counts (``allow-oom``): refused, the jobs stayed PENDING until they expired."""
    client.config_set("maxmemory", 1)  # noeviction: every other write is refused
    try:
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            client.set("another-write", 1)
        store_and_publish(client, [result("a")], 60, log_of(["a"]))
        assert count_attempt(client, attempts_key("m"), 60, batch_key("m")) == 1
        assert count_attempt(client, attempts_key("m"), 60) == 2
    finally:
        client.config_set("maxmemory", 0)
    assert orjson.loads(client.get(job_key("a"))) == result("a")
    assert [job["job"] for job in read_recent(client, "iris", 10)] == ["a"]
    assert client.get(batch_key("m")) == b"STARTED" and client.ttl(attempts_key("m")) > 0

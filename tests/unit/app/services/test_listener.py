"""ResultListener._dispatch wakes exactly the futures registered for the published jobs."""

from __future__ import annotations

import asyncio

import fakeredis
import orjson

from app.services.listener import ResultListener
from core.messages import pack_results


def result(job_id: str) -> bytes:
    return orjson.dumps({"job_id": job_id, "status": "SUCCESS", "n": job_id})


def message(*job_ids: str) -> bytes:
    return pack_results([(j, result(j)) for j in job_ids])


def test_dispatch_wakes_exactly_the_registered_jobs():
    async def scenario():
        listener = ResultListener(fakeredis.FakeAsyncRedis())
        futures = {j: listener.register(j) for j in ("a", "b", "c")}
        listener._dispatch(message("a", "x", "c"))  # "x" waits in another gateway
        return listener, futures

    listener, futures = asyncio.run(scenario())
    assert futures["a"].result() == result("a")  # the worker's bytes, unparsed
    assert orjson.loads(futures["c"].result())["n"] == "c"
    assert not futures["b"].done()
    assert listener.waiting == 1


def test_each_results_message_goes_to_the_hook_after_its_waiters_woke():
    """The submitter learns from it that a worker is free (app/services/submitter.py)."""
    seen = []

    async def scenario():
        listener = ResultListener(fakeredis.FakeAsyncRedis())
        future = listener.register("a")
        listener.on_results = lambda ids: seen.append((ids, future.done()))
        listener._dispatch(message("a", "x"))
        listener._dispatch(message("y"))  # nobody here waits: not even parsed

    asyncio.run(scenario())
    assert seen == [(["a", "x"], True)]


def test_a_result_wakes_its_waiter_once():
    async def scenario():
        listener = ResultListener(fakeredis.FakeAsyncRedis())
        future = listener.register("a")
        listener._dispatch(message("a"))
        listener._dispatch(message("a"))  # a duplicate delivery finds no waiter
        return listener, future

    listener, future = asyncio.run(scenario())
    assert orjson.loads(future.result())["job_id"] == "a"
    assert listener.waiting == 0


def test_discarded_and_cancelled_waiters_are_skipped():
    async def scenario():
        listener = ResultListener(fakeredis.FakeAsyncRedis())
        gone, cancelled = listener.register("gone"), listener.register("cancelled")
        listener.discard("gone")
        cancelled.cancel()
        listener._dispatch(message("gone", "cancelled"))
        return listener, gone

    listener, gone = asyncio.run(scenario())
    assert not gone.done()
    assert listener.waiting == 0


MALFORMED = (
    b"not json",
    b"null",
    b'{"jobs": 5}',
    b'["a"]',  # one id, no result line
    b'["a", "b"]\n{}',  # two ids, one result line
    b'[7, null, ["a"]]\n1\n2\n3',  # ids that are not strings
    b"\n\n",
)


def test_malformed_messages_are_ignored():
    async def scenario():
        listener = ResultListener(fakeredis.FakeAsyncRedis())
        future = listener.register("a")
        for bad in MALFORMED:
            listener._dispatch(bad)
        listener._dispatch(message("a"))
        return future

    assert orjson.loads(asyncio.run(scenario()).result())["job_id"] == "a"


def test_the_running_listener_wakes_a_waiter_from_a_publish():
    async def scenario():
        server = fakeredis.FakeServer()
        listener = ResultListener(fakeredis.FakeAsyncRedis(server=server))
        future = listener.register("a")
        listener.start()
        try:
            publisher = fakeredis.FakeAsyncRedis(server=server)
            # Publish until the subscription, set up in the background, has seen one.
            for _ in range(500):
                await publisher.publish("mlops:results", message("a"))
                done, _ = await asyncio.wait([future], timeout=0.02)
                if done:
                    return future.result()
            raise AssertionError("the listener never woke the waiter")
        finally:
            await listener.stop()

    assert orjson.loads(asyncio.run(scenario()))["job_id"] == "a"

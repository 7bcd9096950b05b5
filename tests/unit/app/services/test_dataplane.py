"""app/services/inference.py (target name dataplane.py): submit a job and await its result."""

from __future__ import annotations

import asyncio

import fakeredis

from app.metrics import GatewayMetrics
from app.services.dataplane import await_result, submit_and_wait
from app.services.listener import ResultListener
from app.services.submitter import JobSubmitter
from core.messages import PREDICT_QUEUE, pack_results
from tests.factories import (
    decode_message,
    finished,
    memory_tracer,
    open_admission,
    run,
    samples,
    value,
)


def test_a_sync_wait_that_ends_without_a_result_is_counted():
    async def scenario():
        client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
        metrics = GatewayMetrics()
        submitter = JobSubmitter(
            client, admission=open_admission(), max_rows=1, max_wait_ms=1, ttl=60, metrics=metrics
        )
        listener = ResultListener(client)
        future = listener.register("never-answered")
        result = await await_result(submitter, listener, "never-answered", future, 0.01)
        return result, metrics

    result, metrics = run(scenario())
    assert result is None
    assert value(samples(metrics.exposition()), "mlops_sync_wait_timeouts_total") == 1


def test_traced_a_job_carries_its_request_span_and_its_delivery_is_an_event():
    tracer, exporter = memory_tracer()

    async def scenario():
        client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
        submitter = JobSubmitter(
            client, admission=open_admission(), max_rows=1, max_wait_ms=1, ttl=60, tracer=tracer
        )
        listener = ResultListener(client)
        with tracer.span("POST /predict", kind="server"):
            request = tracer.traceparent()
            waiting = asyncio.ensure_future(
                submit_and_wait(
                    submitter,
                    listener,
                    rows=[[1.0, 2.0]],
                    features=("a", "b"),
                    request_id=None,
                    wait=5,
                    expires_in=60,
                    job_id="j1",
                )
            )
            for _ in range(1000):  # until the message is written
                if await client.llen(PREDICT_QUEUE):
                    break
                await asyncio.sleep(0.001)
            listener._dispatch(pack_results([("j1", b'{"status": "SUCCESS"}')]))
            outcome = await waiting
        (payload,) = await client.lrange(PREDICT_QUEUE, 0, -1)
        return request, outcome, payload

    request, outcome, payload = run(scenario())
    assert outcome.result == b'{"status": "SUCCESS"}'
    envelope, (args, _, _) = decode_message(payload)
    (job,) = args[0]
    assert job["traceparent"] == request  # the worker links its prediction to the request
    spans = finished(tracer, exporter)
    publish, server = spans["publish predict"], spans["POST /predict"]
    (delivered,) = server.events
    assert delivered.name == "result delivered"
    assert delivered.attributes["mlops.job_id"] == "j1"
    assert publish.parent.span_id == server.context.span_id
    assert envelope["headers"]["traceparent"].split("-")[2] == f"{publish.context.span_id:016x}"

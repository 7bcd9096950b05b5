"""app/services/idempotency.py on fakeredis: claims scoped per API key, and the replay answers."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import fakeredis
import orjson
import pytest

from app.errors import IdempotencyConflict
from app.metrics import GatewayMetrics
from app.services import idempotency
from app.services.listener import ResultListener
from core.jobs import job_key
from core.messages import pack_results

BODY = b'{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}'


def test_a_claim_is_scoped_to_its_api_key_and_names_its_job_and_body():
    claim = idempotency.new_claim("owner-a", "order-1", "j1", BODY)
    again = idempotency.new_claim("owner-a", "order-1", "j2", BODY)
    other_body = idempotency.new_claim("owner-a", "order-1", "j3", BODY + b" ")
    other_owner = idempotency.new_claim("owner-b", "order-1", "j4", BODY)
    assert claim.key == again.key == idempotency.idempotency_key("owner-a:order-1")
    assert other_owner.key != claim.key  # two clients may use the same key
    assert claim.value == f"j1 {claim.digest}"
    assert claim.digest == again.digest != other_body.digest


def gateway(client) -> SimpleNamespace:
    """What replay() uses of the Gateway, with a listener that is not subscribed."""
    submitter = SimpleNamespace(client=client, metrics=GatewayMetrics(), tracer=None)
    return SimpleNamespace(
        redis=client,
        listener=ResultListener(client),
        submitter=submitter,
        settings=SimpleNamespace(api=SimpleNamespace(jobs_ttl_seconds=60)),
    )


def record(status: str, **fields) -> bytes:
    base = {"job_id": "j0", "kind": "predict", "status": status, "request_id": "r"}
    return orjson.dumps({**base, **fields})


def replay(stored: bytes | None, body: bytes = BODY, wait: float = 0.0, result=None):
    """Replay a request whose claim finds job j0 (claimed with BODY) holding the key."""

    async def scenario():
        client = fakeredis.FakeAsyncRedis()
        if stored is not None:
            await client.set(job_key("j0"), stored)
        gw = gateway(client)
        if result is not None:  # the worker's result arrives while the replay waits
            message = pack_results([("j0", result)])
            asyncio.get_running_loop().call_later(0.05, gw.listener._dispatch, message)
        first = idempotency.new_claim("owner", "k", "j0", BODY)
        claim = idempotency.new_claim("owner", "k", "j1", body)
        return await idempotency.replay(gw, first.value, claim, "r", wait)

    return asyncio.run(asyncio.wait_for(scenario(), 10))


def test_the_same_key_with_another_body_is_a_409():
    with pytest.raises(IdempotencyConflict) as info:
        replay(record("PENDING"), body=b'{"other": 1}')
    assert info.value.status_code == 409


def test_a_finished_job_is_answered_with_its_record_marked_replayed():
    done = record("SUCCESS", predictions=["setosa"])
    outcome = replay(done)
    assert orjson.loads(outcome.result) == orjson.loads(done)
    assert (outcome.job_id, outcome.request_id, outcome.replayed) == ("j0", "r", True)


def test_a_queued_job_is_answered_with_no_result_marked_replayed():
    outcome = replay(record("PENDING"), wait=0.05)
    assert (outcome.job_id, outcome.request_id, outcome.result) == ("j0", "r", None)
    assert outcome.replayed


def test_a_sync_replay_waits_for_the_result_of_the_first_job():
    result = record("SUCCESS", predictions=["virginica"])
    outcome = replay(record("PENDING"), wait=5, result=result)
    assert outcome.result == result  # the worker's bytes, as a first request would get them
    assert outcome.replayed

"""core/single_flight.py on fakeredis[lua]. The CLI's side: training/test_single_flight.py."""

from __future__ import annotations

import threading

import orjson
import pytest

from core.jobs import job_key
from core.messages import RETRAIN_TASK, TRAIN_QUEUE
from core.single_flight import Holder, RunLease, holder, lock_key, request_retrain
from tests.factories import decode_message

RETRAIN_LOCK_KEY = lock_key("iris")  # the default model's retrain lock

HOUR = 3600


def queued_tasks(redis_client) -> list[dict]:
    return [orjson.loads(raw)["headers"] for raw in redis_client.lrange(TRAIN_QUEUE, 0, -1)]


# -- queueing: POST /retrain and beat ----------------------------------------------------------
def test_a_request_claims_records_and_queues_at_once(redis_client):
    job_id, joined = request_retrain(
        redis_client, "iris", requested_by="api key abc", ttl=HOUR, owner="o1"
    )
    assert not joined
    assert holder(redis_client, "iris") == Holder(job_id, running=False)
    assert HOUR - 5 < redis_client.ttl(RETRAIN_LOCK_KEY) <= HOUR  # as long as the job may wait
    record = orjson.loads(redis_client.get(job_key(job_id)))
    assert record["kind"] == "train" and record["status"] == "PENDING"
    assert record["requested_by"] == "api key abc" and record["owner"] == "o1"
    (headers,) = queued_tasks(redis_client)
    assert headers["task"] == RETRAIN_TASK and headers["id"] == job_id
    assert headers["expires"] is not None  # dropped unrun once its record and claim are gone


def test_a_second_request_while_one_waits_joins_it_and_queues_nothing(redis_client):
    first, _ = request_retrain(redis_client, "iris", requested_by="a", ttl=HOUR)
    second, joined = request_retrain(redis_client, "iris", requested_by="b", ttl=HOUR)
    assert joined and second == first
    assert len(queued_tasks(redis_client)) == 1


def test_a_request_while_a_run_holds_the_lease_joins_that_run(redis_client):
    lease = RunLease(redis_client, "iris", "cli-1", 30)
    assert lease.start() is None
    job_id, joined = request_retrain(redis_client, "iris", requested_by="beat", ttl=HOUR)
    assert joined and job_id == "cli-1"
    assert queued_tasks(redis_client) == []


# -- running: the worker and the CLI -------------------------------------------------------------
def test_a_run_takes_the_claim_made_for_its_job_and_holds_a_lease(redis_client):
    job_id, _ = request_retrain(redis_client, "iris", requested_by="a", ttl=HOUR)
    lease = RunLease(redis_client, "iris", job_id, 30)
    assert lease.start() is None
    assert holder(redis_client, "iris") == Holder(job_id, running=True)
    assert 25_000 < redis_client.pttl(RETRAIN_LOCK_KEY) <= 30_000  # one lease, not the queue's hour


def test_a_run_of_another_job_is_refused_and_told_who_holds_it(redis_client):
    job_id, _ = request_retrain(redis_client, "iris", requested_by="a", ttl=HOUR)
    assert RunLease(redis_client, "iris", "job-beat", 30).start() == Holder(job_id, running=False)
    assert RunLease(redis_client, "iris", job_id, 30).start() is None
    assert RunLease(redis_client, "iris", "job-beat", 30).start() == Holder(job_id, running=True)


def test_a_second_delivery_of_a_running_job_sees_it_running(redis_client):
    first = RunLease(redis_client, "iris", "job-1", 30)
    assert first.start() is None
    again = RunLease(redis_client, "iris", "job-1", 30)  # the same job, another process
    assert again.start() == Holder("job-1", running=True)
    assert not again.renew() and not again.release()
    assert first.renew()


def test_after_the_lease_runs_out_the_next_run_gets_it(redis_client):
    crashed = RunLease(redis_client, "iris", "job-1", 30)
    crashed.start()
    redis_client.delete(RETRAIN_LOCK_KEY)  # what the lease expiry does (Redis's own clock)
    assert RunLease(redis_client, "iris", "job-2", 30).start() is None
    assert not crashed.renew()
    assert not crashed.release()
    assert holder(redis_client, "iris") == Holder("job-2", running=True)


def test_renewing_renews_in_the_background_and_releases_at_the_end(redis_client, monkeypatch):
    held = RunLease(redis_client, "iris", "job-1", 0.03)  # renewal every 10 ms
    renewed = threading.Event()
    real_renew = held.renew

    def renew() -> bool:
        renewed.set()
        return real_renew()

    monkeypatch.setattr(held, "renew", renew)
    held.start()
    with held.renewing():
        assert renewed.wait(timeout=10)
    assert redis_client.get(RETRAIN_LOCK_KEY) is None
    assert held.held


def test_a_run_whose_lease_was_taken_knows_it_lost_it(redis_client):
    held = RunLease(redis_client, "iris", "job-1", 0.06)
    held.start()
    with held.renewing():
        redis_client.set(RETRAIN_LOCK_KEY, "job-2|elsewhere")  # the lease ran out, job-2 took over
        assert held.lost.wait(timeout=10)
        assert not held.held
    assert redis_client.get(RETRAIN_LOCK_KEY) == b"job-2|elsewhere"  # not released: not ours


def test_renewing_releases_when_the_work_fails(redis_client):
    held = RunLease(redis_client, "iris", "job-1", 30)
    held.start()
    with pytest.raises(RuntimeError), held.renewing():
        raise RuntimeError("training crashed")
    assert redis_client.get(RETRAIN_LOCK_KEY) is None


def test_the_queued_message_is_a_celery_retrain_task(redis_client):
    request_retrain(redis_client, "iris", requested_by="a", ttl=HOUR)
    envelope, (args, kwargs, _embed) = decode_message(redis_client.lrange(TRAIN_QUEUE, 0, -1)[0])
    assert (args, kwargs) == (["iris"], {"trigger": "manual", "force": False})  # the model, and why
    assert envelope["properties"]["delivery_info"]["routing_key"] == TRAIN_QUEUE


def test_the_message_carries_the_trigger_and_its_detail(redis_client):
    detail = {"features": ["petal_length"]}
    request_retrain(
        redis_client, "iris", "drift monitoring", HOUR, trigger="drift", trigger_detail=detail
    )
    _, (args, kwargs, _embed) = decode_message(redis_client.lrange(TRAIN_QUEUE, 0, -1)[0])
    assert (args, kwargs) == (
        ["iris"],
        {"trigger": "drift", "trigger_detail": detail, "force": False},
    )


def test_the_trigger_and_force_travel_with_the_job(redis_client):
    job_id, _ = request_retrain(
        redis_client, "iris", requested_by="labels trigger", ttl=HOUR, trigger="labels", force=True
    )
    _, (_args, kwargs, _embed) = decode_message(redis_client.lrange(TRAIN_QUEUE, 0, -1)[0])
    assert kwargs == {"trigger": "labels", "force": True}
    assert orjson.loads(redis_client.get(job_key(job_id)))["trigger"] == "labels"
    with pytest.raises(ValueError, match="unknown retrain trigger"):
        request_retrain(redis_client, "iris", requested_by="a", ttl=HOUR, trigger="whim")


def test_a_traced_request_carries_its_traceparent_in_the_message_headers(redis_client):
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    request_retrain(redis_client, "iris", "api key abc", HOUR, traceparent=traceparent)
    request_retrain(redis_client, "other", "beat", HOUR)
    traced, untraced = sorted(queued_tasks(redis_client), key=lambda h: "traceparent" in h)[::-1]
    assert traced["traceparent"] == traceparent
    assert "traceparent" not in untraced

"""core/single_flight.py on fakeredis[lua], and the CLI's side of it (training/single_flight.py)."""

from __future__ import annotations

import base64
import threading

import fakeredis
import orjson
import pytest

from core.messages import RETRAIN_TASK, TRAIN_QUEUE, job_key
from core.settings import get_settings
from core.single_flight import RETRAIN_LOCK_KEY, Holder, RunLease, holder, request_retrain
from training import single_flight as single_flight_module
from training.single_flight import TrainingRunning, single_flight

HOUR = 3600


@pytest.fixture
def client():
    return fakeredis.FakeRedis()


def queued_tasks(client) -> list[dict]:
    return [orjson.loads(raw)["headers"] for raw in client.lrange(TRAIN_QUEUE, 0, -1)]


# -- queueing: POST /retrain and beat ----------------------------------------------------------
def test_a_request_claims_records_and_queues_at_once(client):
    job_id, joined = request_retrain(client, requested_by="api key abc", ttl=HOUR, owner="o1")
    assert not joined
    assert holder(client) == Holder(job_id, running=False)
    assert HOUR - 5 < client.ttl(RETRAIN_LOCK_KEY) <= HOUR  # as long as the job may wait
    record = orjson.loads(client.get(job_key(job_id)))
    assert record["kind"] == "train" and record["status"] == "PENDING"
    assert record["requested_by"] == "api key abc" and record["owner"] == "o1"
    (headers,) = queued_tasks(client)
    assert headers["task"] == RETRAIN_TASK and headers["id"] == job_id
    assert headers["expires"] is not None  # dropped unrun once its record and claim are gone


def test_a_second_request_while_one_waits_joins_it_and_queues_nothing(client):
    first, _ = request_retrain(client, requested_by="a", ttl=HOUR)
    second, joined = request_retrain(client, requested_by="b", ttl=HOUR)
    assert joined and second == first
    assert len(queued_tasks(client)) == 1


def test_a_request_while_a_run_holds_the_lease_joins_that_run(client):
    lease = RunLease(client, "cli-1", 30)
    assert lease.start() is None
    job_id, joined = request_retrain(client, requested_by="beat", ttl=HOUR)
    assert joined and job_id == "cli-1"
    assert queued_tasks(client) == []


# -- running: the worker and the CLI -------------------------------------------------------------
def test_a_run_takes_the_claim_made_for_its_job_and_holds_a_lease(client):
    job_id, _ = request_retrain(client, requested_by="a", ttl=HOUR)
    lease = RunLease(client, job_id, 30)
    assert lease.start() is None
    assert holder(client) == Holder(job_id, running=True)
    assert 25_000 < client.pttl(RETRAIN_LOCK_KEY) <= 30_000  # one lease, not the queue's hour


def test_a_run_of_another_job_is_refused_and_told_who_holds_it(client):
    job_id, _ = request_retrain(client, requested_by="a", ttl=HOUR)
    assert RunLease(client, "job-beat", 30).start() == Holder(job_id, running=False)
    assert RunLease(client, job_id, 30).start() is None
    assert RunLease(client, "job-beat", 30).start() == Holder(job_id, running=True)


def test_a_second_delivery_of_a_running_job_sees_it_running(client):
    first = RunLease(client, "job-1", 30)
    assert first.start() is None
    again = RunLease(client, "job-1", 30)  # the same job, another process
    assert again.start() == Holder("job-1", running=True)
    assert not again.renew() and not again.release()
    assert first.renew()


def test_after_the_lease_runs_out_the_next_run_gets_it(client):
    crashed = RunLease(client, "job-1", 30)
    crashed.start()
    client.delete(RETRAIN_LOCK_KEY)  # what the lease expiry does (Redis's own clock)
    assert RunLease(client, "job-2", 30).start() is None
    assert not crashed.renew()
    assert not crashed.release()
    assert holder(client) == Holder("job-2", running=True)


def test_renewing_renews_in_the_background_and_releases_at_the_end(client, monkeypatch):
    held = RunLease(client, "job-1", 0.03)  # renewal every 10 ms
    renewed = threading.Event()
    real_renew = held.renew

    def renew() -> bool:
        renewed.set()
        return real_renew()

    monkeypatch.setattr(held, "renew", renew)
    held.start()
    with held.renewing():
        assert renewed.wait(timeout=10)
    assert client.get(RETRAIN_LOCK_KEY) is None
    assert held.held


def test_a_run_whose_lease_was_taken_knows_it_lost_it(client):
    held = RunLease(client, "job-1", 0.06)
    held.start()
    with held.renewing():
        client.set(RETRAIN_LOCK_KEY, "job-2|elsewhere")  # the lease ran out, job-2 took over
        assert held.lost.wait(timeout=10)
        assert not held.held
    assert client.get(RETRAIN_LOCK_KEY) == b"job-2|elsewhere"  # not released: not ours


def test_renewing_releases_when_the_work_fails(client):
    held = RunLease(client, "job-1", 30)
    held.start()
    with pytest.raises(RuntimeError), held.renewing():
        raise RuntimeError("training crashed")
    assert client.get(RETRAIN_LOCK_KEY) is None


# -- the CLI's single flight ------------------------------------------------------------------
@pytest.fixture
def cli_redis(monkeypatch):
    server = fakeredis.FakeServer()
    monkeypatch.setattr(
        single_flight_module, "sync_client", lambda _url: fakeredis.FakeRedis(server=server)
    )
    return fakeredis.FakeRedis(server=server)


def test_cli_takes_the_lock_and_records_the_job(cli_redis):
    with single_flight(get_settings()) as (result, lease):
        running = holder(cli_redis)
        assert running.running and running.job_id == lease.job_id
        assert orjson.loads(cli_redis.get(job_key(lease.job_id)))["status"] == "STARTED"
        result["decision"] = "promoted"
    assert cli_redis.get(RETRAIN_LOCK_KEY) is None
    record = orjson.loads(cli_redis.get(job_key(lease.job_id)))
    assert record["status"] == "SUCCESS" and record["result"] == {"decision": "promoted"}
    assert record["requested_by"] == "cli"


def test_cli_refuses_while_another_training_is_queued_or_runs(cli_redis):
    job_id, _ = request_retrain(cli_redis, requested_by="a", ttl=HOUR)
    with pytest.raises(TrainingRunning, match=f"training job {job_id} is already running"):  # noqa: SIM117
        with single_flight(get_settings()):
            pytest.fail("trained although the lock was held")
    assert holder(cli_redis) == Holder(job_id, running=False)


def test_cli_failed_training_releases_and_records_failure(cli_redis):
    with pytest.raises(ValueError), single_flight(get_settings()) as (_result, lease):
        raise ValueError("bad data")
    assert cli_redis.get(RETRAIN_LOCK_KEY) is None
    record = orjson.loads(cli_redis.get(job_key(lease.job_id)))
    assert record["status"] == "FAILURE" and "bad data" in record["error"]["message"]


def test_cli_without_redis_trains_unlocked_and_warns(monkeypatch):
    monkeypatch.setenv("MLOPS_REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens there
    from core.settings import reset_settings

    reset_settings()
    warnings = []
    handler = single_flight_module.logger.add(warnings.append, level="WARNING")
    try:
        with single_flight(get_settings()) as (result, lease):
            result["ran"] = True
    finally:
        single_flight_module.logger.remove(handler)
    assert result == {"ran": True} and lease is None
    assert any("without the single-flight lock" in str(m) for m in warnings)


def test_the_queued_message_is_a_celery_retrain_task(client):
    request_retrain(client, requested_by="a", ttl=HOUR)
    envelope = orjson.loads(client.lrange(TRAIN_QUEUE, 0, -1)[0])
    args, kwargs, _embed = orjson.loads(base64.b64decode(envelope["body"]))
    assert (args, kwargs) == ([], {})
    assert envelope["properties"]["delivery_info"]["routing_key"] == TRAIN_QUEUE

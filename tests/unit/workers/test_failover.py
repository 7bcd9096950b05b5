"""workers/failover.py: after a change of primary, jobs whose message was lost end FAILURE."""

from __future__ import annotations

import orjson

from core.jobs import SUCCESS, batch_key, job_key, pending_predict
from core.messages import PREDICT_QUEUE, PREDICT_TASK, RESULTS_CHANNEL, celery_message
from tests.factories import predict_job
from workers import failover
from workers.recovery import UNACKED_KEY

QUEUES = [PREDICT_QUEUE, "predict.other"]


def accept(client, job_id: str, queue: str = PREDICT_QUEUE) -> tuple[str, bytes]:
    """The gateway's write: the job's PENDING record and its message; the message returned,
    not queued (the test puts it where it wants)."""
    job = predict_job(job_id)
    task_id, payload = celery_message(PREDICT_TASK, [[job]], queue=queue)
    client.set(job_key(job_id), orjson.dumps(pending_predict(job, task_id, 1.0)))
    return task_id, payload


def record(client, job_id: str) -> dict:
    return orjson.loads(client.get(job_key(job_id)))


def test_only_jobs_whose_message_is_in_no_queue_and_not_unacked_are_failed(redis_client):
    _, queued = accept(redis_client, "queued")
    redis_client.lpush("predict.other", queued)
    _, delivered = accept(redis_client, "delivered")
    entry = [orjson.loads(delivered), "", PREDICT_QUEUE]  # kombu's unacked entry
    redis_client.hset(UNACKED_KEY, "tag", orjson.dumps(entry))
    running, _ = accept(redis_client, "running")  # acknowledged without its results written
    redis_client.set(batch_key(running), "STARTED")
    _, own = accept(redis_client, "own-queue", queue="predict.removed")  # a queue the record names
    record_of_own = record(redis_client, "own-queue") | {"queue": "predict.removed"}
    redis_client.set(job_key("own-queue"), orjson.dumps(record_of_own))
    redis_client.lpush("predict.removed", own)
    accept(redis_client, "lost")
    accept(redis_client, "done")
    redis_client.set(job_key("done"), orjson.dumps({"job_id": "done", "status": SUCCESS}))
    pubsub = redis_client.pubsub()
    pubsub.subscribe(RESULTS_CHANNEL)
    pauses = []

    assert sorted(failover.audit(redis_client, QUEUES, sleep=pauses.append)) == ["lost", "running"]

    assert pauses == [failover.SETTLE]  # looked twice
    lost = record(redis_client, "lost")
    assert lost["status"] == "FAILURE"
    assert lost["error"]["reason"] == "lost_in_failover"
    assert lost["request_id"] == "req-lost"
    for job_id in ("queued", "delivered", "own-queue"):
        assert record(redis_client, job_id)["status"] == "PENDING"
    assert record(redis_client, "done")["status"] == SUCCESS
    pubsub.get_message(timeout=1)  # the subscription's confirmation
    message = pubsub.get_message(timeout=1)
    assert sorted(orjson.loads(message["data"].split(b"\n")[0])) == ["lost", "running"]


def test_a_job_whose_message_shows_up_before_the_second_look_is_spared(redis_client):
    _, payload = accept(redis_client, "late")

    def meanwhile(_seconds):  # the message was between two places at the first look
        redis_client.lpush(PREDICT_QUEUE, payload)

    assert failover.audit(redis_client, QUEUES, sleep=meanwhile) == []
    assert record(redis_client, "late")["status"] == "PENDING"


def test_a_job_finished_between_the_looks_is_not_overwritten(redis_client):
    accept(redis_client, "finishing")

    def finishes(_seconds):
        redis_client.set(job_key("finishing"), orjson.dumps({"status": SUCCESS}))

    assert failover.audit(redis_client, QUEUES, sleep=finishes) == []
    assert record(redis_client, "finishing") == {"status": SUCCESS}


def test_the_first_primary_is_recorded_and_a_new_one_is_audited_once(redis_client, monkeypatch):
    run_id = {"value": "first"}
    monkeypatch.setattr(redis_client, "info", lambda _section: {"run_id": run_id["value"]})
    accept(redis_client, "lost")

    assert failover.check(redis_client, QUEUES, "node-a") == []  # first start: recorded
    assert redis_client.get(failover.PRIMARY_KEY) == b"first"
    run_id["value"] = "second"  # a failover: another server answers
    _, payload = accept(redis_client, "acked-later")
    unacked = orjson.dumps([orjson.loads(payload), "", PREDICT_QUEUE])
    redis_client.hset(UNACKED_KEY, "tag", unacked)
    pauses = []

    def sleep(seconds):  # between the rounds, Celery acknowledges a message it never ran
        pauses.append(seconds)
        if seconds == 10:
            redis_client.hdel(UNACKED_KEY, "tag")

    assert failover.check(redis_client, QUEUES, "node-a", (0, 10), sleep) == [
        "lost", "acked-later"
    ]  # fmt: skip
    assert pauses == [0, failover.SETTLE, 10, failover.SETTLE]
    assert redis_client.get(failover.PRIMARY_KEY) == b"second"
    assert failover.check(redis_client, QUEUES, "node-b") == []  # already done


def test_another_node_holding_the_audit_lock_does_the_audit(redis_client, monkeypatch):
    monkeypatch.setattr(redis_client, "info", lambda _section: {"run_id": "new"})
    redis_client.set(failover.PRIMARY_KEY, "old")
    redis_client.set(failover.LOCK_KEY.format("new"), "node-a")
    accept(redis_client, "lost")
    assert failover.check(redis_client, QUEUES, "node-b") == []
    assert record(redis_client, "lost")["status"] == "PENDING"

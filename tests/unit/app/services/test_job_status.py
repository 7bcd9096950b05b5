"""job_status: the gateway's record, the batch marker and Celery's result meta, on fakeredis."""

from __future__ import annotations

import asyncio

import fakeredis
import orjson
import pytest

from app.auth import Principal
from app.errors import JobNotFound
from app.services.job_status import job_status
from core.jobs import batch_key, job_key

TTL = 3600


def status(entries: dict[str, object], job_id: str = "j1", **options) -> dict:
    async def scenario():
        client = fakeredis.FakeAsyncRedis()
        for key, value in entries.items():
            await client.set(key, value if isinstance(value, bytes) else orjson.dumps(value))
        return await job_status(client, job_id, TTL, **options)

    return asyncio.run(scenario())


def predict_record(**changes) -> dict:
    return {"job_id": "j1", "kind": "predict", "status": "PENDING", "task_id": "t1", **changes}


def train_record() -> dict:
    return {"job_id": "j1", "kind": "train", "status": "PENDING"}


def meta(status: str, result=None) -> dict:
    return {"status": status, "result": result, "task_id": "j1"}


def test_a_queued_predict_job_is_pending():
    assert status({job_key("j1"): predict_record()}) == predict_record()


def test_a_predict_job_whose_batch_runs_is_started():
    body = status({job_key("j1"): predict_record(), batch_key("t1"): b"STARTED"})
    assert body["status"] == "STARTED"
    assert body["job_id"] == "j1"


def test_another_batch_running_does_not_start_this_job():
    body = status({job_key("j1"): predict_record(), batch_key("t2"): b"STARTED"})
    assert body["status"] == "PENDING"


@pytest.mark.parametrize("final", ["SUCCESS", "FAILURE"])
def test_a_finished_predict_job_is_its_result(final):
    result = {"job_id": "j1", "status": final, "predictions": ["setosa"], "model_version": 3}
    # The batch marker may outlive the batch: a finished result still wins.
    assert status({job_key("j1"): result, batch_key("t1"): b"STARTED"}) == result


def test_a_train_job_without_celery_meta_is_pending():
    assert status({job_key("j1"): train_record()})["status"] == "PENDING"


def test_a_train_job_in_progress_is_started_with_its_progress():
    progress = {"step": "fit", "percent": 40}
    body = status(
        {job_key("j1"): train_record(), "celery-task-meta-j1": meta("PROGRESS", progress)}
    )
    assert body["status"] == "STARTED"
    assert body["progress"] == progress
    assert body["kind"] == "train"


def test_a_succeeded_train_job_carries_the_decision():
    outcome = {"decision": "promoted", "version": 2}
    body = status({job_key("j1"): train_record(), "celery-task-meta-j1": meta("SUCCESS", outcome)})
    assert body["status"] == "SUCCESS"
    assert body["result"] == outcome


def test_a_failed_train_job_explains_the_error():
    error = {"exc_type": "TrainingError", "exc_message": "no rows"}
    body = status({job_key("j1"): train_record(), "celery-task-meta-j1": meta("FAILURE", error)})
    assert body["status"] == "FAILURE"
    assert body["error"] == {"reason": "task_failed", "message": "TrainingError: no rows"}


def test_a_revoked_train_job_is_a_failure():
    body = status({job_key("j1"): train_record(), "celery-task-meta-j1": meta("REVOKED")})
    assert body["status"] == "FAILURE"
    assert body["error"]["reason"] == "revoked"


def test_an_unknown_job_is_404_with_why():
    with pytest.raises(JobNotFound) as info:
        status({job_key("other"): predict_record(job_id="other")}, job_id="j1")
    assert info.value.status_code == 404
    assert "'j1'" in info.value.message
    assert f"{TTL} s" in info.value.message


# -- whose job: only the key that created it, and admin keys ---------------------------------
CREATOR = Principal("aaaaaaaa", frozenset({"predict"}), "a" * 32)
STRANGER = Principal("bbbbbbbb", frozenset({"predict"}), "b" * 32)
ADMIN = Principal("cccccccc", frozenset({"admin"}), "c" * 32)


@pytest.mark.parametrize("viewer", [CREATOR, ADMIN], ids=["creator", "admin"])
def test_the_creator_and_admins_read_a_job(viewer):
    record = predict_record(owner=CREATOR.owner)
    assert status({job_key("j1"): record}, viewer=viewer)["job_id"] == "j1"


def test_another_key_gets_the_same_404_as_for_an_unknown_job():
    entries = {job_key("j1"): predict_record(owner=CREATOR.owner)}
    with pytest.raises(JobNotFound) as theirs:
        status(entries, viewer=STRANGER)
    with pytest.raises(JobNotFound) as unknown:
        status(entries, job_id="j2", viewer=STRANGER)
    assert theirs.value.message == unknown.value.message.replace("'j2'", "'j1'")


def test_a_job_without_owner_beat_or_cli_is_for_admins_only():
    with pytest.raises(JobNotFound):
        status({job_key("j1"): train_record()}, viewer=CREATOR)
    assert status({job_key("j1"): train_record()}, viewer=ADMIN)["kind"] == "train"


# -- a job waiting for a queue no live worker consumes says so ---------------------------------
def test_a_retrain_nobody_can_take_says_which_queue_lacks_a_worker():
    body = status({job_key("j1"): train_record()}, consumers={"train": 0, "predict": 2}.get)
    assert body["status"] == "PENDING"
    assert body["waiting"]["queue"] == "train" and body["waiting"]["consumers"] == 0
    assert "no live worker consumes the 'train' queue" in body["waiting"]["message"]


def test_a_waiting_job_whose_queue_has_workers_or_unknown_says_nothing_more():
    assert "waiting" not in status(
        {job_key("j1"): train_record()}, consumers={"train": 1, "predict": 0}.get
    )
    assert "waiting" not in status({job_key("j1"): predict_record()}, consumers=lambda _q: None)
    started = {job_key("j1"): predict_record(), batch_key("t1"): b"STARTED"}
    assert "waiting" not in status(started, consumers=lambda _q: 0)

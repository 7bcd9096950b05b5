"""workers/retrain.py and the retrain task: single flight, gate outcome, progress, failures."""

from __future__ import annotations

import threading
import time

import fakeredis
import orjson
import pytest
from celery.exceptions import Ignore

from core.errors import TrainingError
from core.jobs import attempts_key, job_key
from core.messages import RETRAIN_TASK
from core.settings import get_settings
from core.single_flight import RunLease, lock_key
from core.store import open_store
from tests.factories import serving_cache, settings_with
from training.pipeline import STEPS, run_training
from workers import retrain as retrain_module
from workers import tasks as tasks_module
from workers.celery_app import create_app
from workers.retrain import AlreadyRunning, run_retrain
from workers.runtime import Runtime

RETRAIN_LOCK_KEY = lock_key("iris")  # the default model's retrain lock


def make_runtime(settings=None) -> Runtime:
    settings = settings or get_settings()
    store = open_store(settings)
    cache = serving_cache(store, settings)
    return Runtime(settings=settings, store=store, redis=fakeredis.FakeRedis(), cache=cache)


@pytest.fixture
def rt() -> Runtime:
    run_training(get_settings(), force=True)  # v1 in production
    runtime = make_runtime()
    assert runtime.cache.current().version == 1
    return runtime


def with_env(monkeypatch, **env: str) -> Runtime:
    return make_runtime(settings_with(monkeypatch, **env))


def test_promoted_retrain_is_served_at_once_and_releases_the_lock(rt):
    steps = []
    result = run_retrain(
        rt, "job-1", lambda step, percent, _: steps.append((step, percent)), force=True
    )
    assert result["decision"] == "promoted" and result["promoted"] is True
    assert result["version"] == 2 and result["production_version"] == 1
    assert result["candidate"] == result["production"]  # same data: equal scores pass
    assert rt.store.production_version() == 2
    assert rt.cache.served_version == 2  # this worker refreshed without waiting for a poll
    assert rt.redis.get(RETRAIN_LOCK_KEY) is None
    assert steps == list(STEPS.items())
    assert orjson.loads(rt.redis.get(job_key("job-1")))["kind"] == "train"


def test_rejected_retrain_reports_both_metrics_and_margin(rt, monkeypatch):
    rt = with_env(monkeypatch, TRAINING__PROMOTION_MARGIN="0.5")
    result = run_retrain(rt, "job-2", force=True)
    assert result["decision"] == "rejected" and result["promoted"] is False
    assert result["margin"] == 0.5
    assert result["metric"] == "accuracy"
    assert 0 < result["candidate"] <= 1 and 0 < result["production"] <= 1
    assert "margin" in result["reason"]
    assert rt.store.production_version() == 1
    assert rt.store.versions() == [1, 2]  # registered, kept for review, not served


def test_skipped_while_another_training_holds_the_lock(rt):
    rt.redis.set(RETRAIN_LOCK_KEY, "job-running", px=60_000)
    result = run_retrain(rt, "job-beat", force=True)
    assert result == {
        "decision": "skipped",
        "reason": "training job job-running is already running",
        "running_job_id": "job-running",
    }
    assert rt.store.versions() == [1]
    assert rt.redis.get(RETRAIN_LOCK_KEY) == b"job-running"


def test_runs_when_the_gateway_took_the_lock_for_this_job(rt):
    rt.redis.set(RETRAIN_LOCK_KEY, "job-api", px=60_000)
    record = {"job_id": "job-api", "kind": "train", "status": "PENDING", "requested_by": "x"}
    rt.redis.set(job_key("job-api"), orjson.dumps(record))
    assert run_retrain(rt, "job-api", force=True)["decision"] == "promoted"
    assert rt.redis.get(RETRAIN_LOCK_KEY) is None
    assert orjson.loads(rt.redis.get(job_key("job-api")))["requested_by"] == "x"  # not replaced


def test_failed_training_releases_the_lock_and_changes_nothing(rt, monkeypatch):
    rt = with_env(monkeypatch, TRAINING__TRAINER="csv", TRAINING__CSV__PATH="/nonexistent/data.csv")
    with pytest.raises(TrainingError, match="data file not found"):
        run_retrain(rt, "job-3", force=True)
    assert rt.redis.get(RETRAIN_LOCK_KEY) is None
    assert rt.store.versions() == [1] and rt.store.production_version() == 1


class FakeTaskState:
    """Stands in for Celery's result backend: records update_state calls."""

    def __init__(self):
        self.states: list[tuple[str, dict]] = []

    def __call__(self, state=None, meta=None, **_kw) -> None:
        self.states.append((state, meta))


def test_retrain_task_reports_progress_through_update_state(rt, monkeypatch):
    task = create_app(get_settings()).tasks[RETRAIN_TASK]
    recorder = FakeTaskState()
    monkeypatch.setattr(task, "update_state", recorder)
    monkeypatch.setattr(tasks_module, "runtime", lambda: rt)
    task.push_request(id="job-task")
    try:
        result = task.run(force=True)
    finally:
        task.pop_request()
    assert result["decision"] == "promoted"
    assert {state for state, _ in recorder.states} == {"PROGRESS"}
    steps = [meta["step"] for _, meta in recorder.states]
    assert steps[:2] == ["loading data", "splitting"]
    assert {"fitting", "evaluating", "saving", "gating"} <= set(steps)
    percents = [meta["percent"] for _, meta in recorder.states]
    assert percents == sorted(percents) and percents[-1] == 100
    assert all(isinstance(meta["detail"], str) for _, meta in recorder.states)


def test_the_retrain_task_keeps_its_messages_trigger_in_the_new_version(rt, monkeypatch):
    task = create_app(get_settings()).tasks[RETRAIN_TASK]
    monkeypatch.setattr(task, "update_state", FakeTaskState())
    monkeypatch.setattr(tasks_module, "runtime", lambda: rt)
    detail = {"features": ["petal_length"], "version": 1}
    for job, kwargs in (
        ("job-drift", {"trigger": "drift", "trigger_detail": detail}),
        ("job-raw", {}),  # a message without one (an older gateway): manual
        ("job-odd", {"trigger": "schedule", "trigger_detail": ["not", "a", "dict"]}),
    ):
        task.push_request(id=job)
        try:
            task.run("iris", **kwargs, force=True)  # the same data each time: forced
        finally:
            task.pop_request()
    recorded = [(m.trigger, m.trigger_detail) for m in rt.store.all_metadata()]
    assert recorded == [("manual", None), ("drift", detail), ("manual", None), ("schedule", None)]


def test_progress_reporter_failure_does_not_fail_the_run(rt):
    def broken(step, percent, detail):
        raise ConnectionError("result backend down")

    assert run_retrain(rt, "job-4", broken, force=True)["decision"] == "promoted"
    assert rt.redis.get(RETRAIN_LOCK_KEY) is None


# -- crash loops and duplicate deliveries ------------------------------------------------------
def test_a_retrain_that_killed_its_worker_too_often_ends_in_failure(rt):
    max_retries = rt.settings.worker.max_retries_on_crash
    rt.redis.set(attempts_key("job-oom"), max_retries + 1)  # this delivery is one too many
    result = run_retrain(rt, "job-oom", force=True)
    assert result["decision"] == "failed"
    record = orjson.loads(rt.redis.get(job_key("job-oom")))
    assert record["status"] == "FAILURE"
    assert record["error"]["reason"] == "worker_lost"
    assert f"died {max_retries + 1} times" in record["error"]["message"]
    assert rt.redis.get(RETRAIN_LOCK_KEY) is None
    assert rt.store.versions() == [1]


def test_each_start_counts_an_attempt(rt):
    run_retrain(rt, "job-5", force=True)
    assert int(rt.redis.get(attempts_key("job-5"))) == 1
    assert 0 < rt.redis.ttl(attempts_key("job-5")) <= rt.settings.api.jobs_ttl_seconds


def test_a_copy_of_a_run_alive_elsewhere_waits_one_lease_then_is_dropped(rt, monkeypatch):
    rt = with_env(monkeypatch, TRAINING__LOCK_LEASE_SECONDS="1")
    monkeypatch.setattr(retrain_module, "POLL_SECONDS", 0.05)
    rt.redis.set(RETRAIN_LOCK_KEY, "job-6|other-host:1:aa", px=1000)
    stop = threading.Event()

    def alive_elsewhere() -> None:  # the first run renews its lease
        while not stop.wait(0.2):
            rt.redis.pexpire(RETRAIN_LOCK_KEY, 1000)

    thread = threading.Thread(target=alive_elsewhere, daemon=True)
    thread.start()
    started = time.monotonic()
    try:
        with pytest.raises(AlreadyRunning):
            run_retrain(rt, "job-6", force=True)
    finally:
        stop.set()
        thread.join()
    assert time.monotonic() - started >= 1.0  # it waited a whole lease before giving up
    assert rt.store.versions() == [1]
    assert rt.redis.get(RETRAIN_LOCK_KEY) == b"job-6|other-host:1:aa"
    assert rt.redis.get(attempts_key("job-6")) is None  # no attempt of its own


def test_a_copy_of_a_run_that_died_takes_over_once_its_lease_lapses(rt, monkeypatch):
    monkeypatch.setattr(retrain_module, "POLL_SECONDS", 0.05)
    rt.redis.set(RETRAIN_LOCK_KEY, "job-7|dead-host:1:aa", px=300)  # nobody renews it
    assert run_retrain(rt, "job-7", force=True)["decision"] == "promoted"
    assert rt.store.versions() == [1, 2]


def test_a_copy_of_a_run_that_already_finished_is_dropped(rt, monkeypatch):
    monkeypatch.setattr(retrain_module, "POLL_SECONDS", 0.05)
    rt.redis.set(RETRAIN_LOCK_KEY, "job-8|other-host:1:aa", px=60_000)
    rt.redis.set(job_key("job-8"), orjson.dumps({"job_id": "job-8", "status": "FAILURE"}))
    with pytest.raises(AlreadyRunning):
        run_retrain(rt, "job-8", force=True)


def test_the_retrain_task_drops_a_duplicate_delivery_without_a_result(rt, monkeypatch):
    task = create_app(get_settings()).tasks[RETRAIN_TASK]
    monkeypatch.setattr(tasks_module, "runtime", lambda: rt)

    def duplicate(*_args, **_kwargs):
        raise AlreadyRunning("retrain job-9 is already running in another process")

    monkeypatch.setattr(tasks_module, "run_retrain", duplicate)
    task.push_request(id="job-9")
    try:
        with pytest.raises(Ignore):
            task.run()
    finally:
        task.pop_request()


# -- fencing: a run never overwrites what changed while it trained -----------------------------
def test_a_run_that_lost_its_lease_registers_but_does_not_promote(rt):
    lease = RunLease(rt.redis, "iris", "job-10", 30)
    lease.lost.set()
    outcome = run_training(rt.settings, rt.store, lease=lease, force=True)
    assert outcome.decision == "rejected" and not outcome.promoted
    assert "lost its single-flight lease" in outcome.reason
    assert rt.store.production_version() == 1
    assert rt.store.metadata(outcome.version).gate.decision == "rejected"


def test_a_manual_rollback_during_training_is_not_overwritten(rt):
    run_training(rt.settings, rt.store, force=True)  # v2 in production, v1 in the history

    def operator_rolls_back(step: str, _percent: int, _detail: str) -> None:
        if step == "fitting":
            rt.store.rollback(actor="operator")

    outcome = run_training(rt.settings, rt.store, progress=operator_rolls_back, force=True)
    assert outcome.decision == "rejected"
    assert "changed from v2 to v1" in outcome.reason
    assert rt.store.production_version() == 1  # the operator's choice stands


def test_a_run_records_who_registered_and_promoted_it(rt):
    outcome = run_training(rt.settings, rt.store, actor="job j (api key abcd1234)", force=True)
    audit = rt.store.metadata(outcome.version).audit
    assert [(a.action, a.by) for a in audit] == [
        ("registered", "job j (api key abcd1234)"),
        ("promoted", "job j (api key abcd1234)"),
    ]
    assert audit[1].detail == f"production v1 -> v{outcome.version}"

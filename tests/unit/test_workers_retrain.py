"""workers/retrain.py and the retrain task: single flight, gate outcome, progress, failures."""

from __future__ import annotations

import functools

import fakeredis
import orjson
import pytest

from core.errors import TrainingError
from core.messages import RETRAIN_TASK, job_key
from core.settings import get_settings, reset_settings
from core.single_flight import RETRAIN_LOCK_KEY
from core.store import open_store
from training.pipeline import STEPS, run_training
from training.serialization import load_model
from workers import create_app
from workers import tasks as tasks_module
from workers.model_cache import ModelCache
from workers.retrain import run_retrain
from workers.runtime import Runtime


def make_runtime() -> Runtime:
    settings = get_settings()
    store = open_store(settings)
    cache = ModelCache(store, functools.partial(load_model, store, settings=settings))
    return Runtime(settings=settings, store=store, redis=fakeredis.FakeRedis(), cache=cache)


@pytest.fixture
def rt() -> Runtime:
    run_training(get_settings())  # v1 in production
    runtime = make_runtime()
    assert runtime.cache.current().version == 1
    return runtime


def with_env(monkeypatch, **env: str) -> Runtime:
    for key, value in env.items():
        monkeypatch.setenv(f"MLOPS_{key}", value)
    reset_settings()
    return make_runtime()


def test_promoted_retrain_is_served_at_once_and_releases_the_lock(rt):
    steps = []
    result = run_retrain(rt, "job-1", lambda step, percent: steps.append((step, percent)))
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
    result = run_retrain(rt, "job-2")
    assert result["decision"] == "rejected" and result["promoted"] is False
    assert result["margin"] == 0.5
    assert result["metric"] == "accuracy"
    assert 0 < result["candidate"] <= 1 and 0 < result["production"] <= 1
    assert "margin" in result["reason"]
    assert rt.store.production_version() == 1
    assert rt.store.versions() == [1, 2]  # registered, kept for review, not served


def test_skipped_while_another_training_holds_the_lock(rt):
    rt.redis.set(RETRAIN_LOCK_KEY, "job-running", px=60_000)
    result = run_retrain(rt, "job-beat")
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
    assert run_retrain(rt, "job-api")["decision"] == "promoted"
    assert rt.redis.get(RETRAIN_LOCK_KEY) is None
    assert orjson.loads(rt.redis.get(job_key("job-api")))["requested_by"] == "x"  # not replaced


def test_failed_training_releases_the_lock_and_changes_nothing(rt, monkeypatch):
    rt = with_env(monkeypatch, TRAINING__TRAINER="csv", TRAINING__CSV__PATH="/nonexistent/data.csv")
    with pytest.raises(TrainingError, match="data file not found"):
        run_retrain(rt, "job-3")
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
        result = task.run()
    finally:
        task.pop_request()
    assert result["decision"] == "promoted"
    assert {state for state, _ in recorder.states} == {"PROGRESS"}
    steps = [meta["step"] for _, meta in recorder.states]
    assert steps[:2] == ["loading data", "splitting"]
    assert {"fitting", "evaluating", "saving", "gating"} <= set(steps)
    percents = [meta["percent"] for _, meta in recorder.states]
    assert percents == sorted(percents) and percents[-1] == 100


def test_progress_reporter_failure_does_not_fail_the_run(rt):
    def broken(step, percent):
        raise ConnectionError("result backend down")

    assert run_retrain(rt, "job-4", broken)["decision"] == "promoted"
    assert rt.redis.get(RETRAIN_LOCK_KEY) is None

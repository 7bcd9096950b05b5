"""workers/prediction_log.py and its place in run_message: what is logged, sampled, reordered."""

from __future__ import annotations

import itertools

import pytest

from core.prediction_log import read_recent
from core.settings import get_settings
from core.store import open_store
from tests.factories import Constant, loaded_model, predict_job, serving_cache, settings_with
from workers.batches import run_message
from workers.inference import predict_jobs
from workers.prediction_log import log_batch
from workers.results import STORE_AND_PUBLISH_SHA
from workers.runtime import Runtime

FEATURES = ["a", "b"]  # the stand-in model's


class Cache:
    def __init__(self, model):
        self.model = model
        self.store = type("S", (), {"model_name": model.name})()

    def current(self):
        return self.model


def answer(model, jobs):
    return predict_jobs(model, jobs)


def test_every_answered_job_is_in_the_entry_with_its_rows_outputs_and_version():
    model = loaded_model(version=4, estimator=Constant())
    jobs = [predict_job("j1", [[1, 2]], FEATURES), predict_job("j2", [[3, 4], [5, 6]], FEATURES)]
    batch = log_batch(get_settings(), model, jobs, answer(model, jobs))
    assert batch.model == "iris" and batch.max_entries == get_settings().prediction_log.max_entries
    assert batch.version == 4
    assert batch.ids == ["j1", "j2"]
    assert (batch.requests[1], batch.rows[1], batch.outputs[1]) == (
        "req-j2",
        [[3, 4], [5, 6]],
        ["x", "x"],
    )


def test_failed_jobs_are_not_logged():
    model = loaded_model(estimator=Constant())
    jobs = [predict_job("ok", [[1, 2]], FEATURES), predict_job("bad", [[1, 2, 3]], FEATURES)]
    results = answer(model, jobs)
    assert [r["status"] for r in results] == ["SUCCESS", "FAILURE"]
    assert log_batch(get_settings(), model, jobs, results).ids == ["ok"]


def test_rows_sent_in_another_feature_order_are_logged_in_the_models():
    model = loaded_model(estimator=Constant())
    jobs = [predict_job("swapped", [[2, 1]], ["b", "a"])]
    assert log_batch(get_settings(), model, jobs, answer(model, jobs)).rows == [[[1, 2]]]


def test_sampling_keeps_the_drawn_share(monkeypatch):
    settings = settings_with(monkeypatch, PREDICTION_LOG__SAMPLE_RATIO="0.5")
    model = loaded_model(estimator=Constant())
    jobs = [predict_job(f"j{i}", [[1, 2]], FEATURES) for i in range(4)]
    draws = itertools.cycle([0.1, 0.9])  # below the ratio: kept
    batch = log_batch(settings, model, jobs, answer(model, jobs), draw=lambda: next(draws))
    assert batch.ids == ["j0", "j2"]


@pytest.mark.parametrize(
    "env", [{"PREDICTION_LOG__ENABLED": "false"}, {"PREDICTION_LOG__SAMPLE_RATIO": "0"}]
)
def test_logging_off_logs_nothing(monkeypatch, env):
    settings = settings_with(monkeypatch, **env)
    model = loaded_model(estimator=Constant())
    jobs = [predict_job("j", [[1, 2]], FEATURES)]
    assert log_batch(settings, model, jobs, answer(model, jobs)) is None


def test_a_model_table_overrides_the_log_settings(monkeypatch):
    settings = settings_with(monkeypatch, MODELS__IRIS__PREDICTION_LOG__ENABLED="false")
    assert settings.prediction_log.enabled and not settings.prediction_log_of("iris").enabled
    assert settings.prediction_log_of("iris").max_entries == settings.prediction_log.max_entries


def test_run_message_logs_with_the_published_results(redis_client):
    model = loaded_model(version=2, estimator=Constant())
    jobs = [predict_job(f"j{i}", [[i, i]], FEATURES, owner="key1") for i in range(3)]
    summary = run_message(
        redis_client, Cache(model), jobs, task_id="t", ttl=60, max_attempts=3,
        settings=get_settings(),
    )  # fmt: skip
    assert summary["failed"] == 0
    logged = read_recent(redis_client, "iris", 10)
    assert [(e["job"], e["owner"], e["version"], e["rows"]) for e in logged] == [
        (f"j{i}", "key1", 2, [[i, i]]) for i in range(3)
    ]


def test_run_message_without_settings_logs_nothing(redis_client):
    model = loaded_model(estimator=Constant())
    run_message(
        redis_client, Cache(model), [predict_job("j", [[1, 2]], FEATURES)], task_id="t",
        ttl=60, max_attempts=3,
    )  # fmt: skip
    assert read_recent(redis_client, "iris", 10) == []


def test_a_redis_that_forgot_the_script_gets_it_again_and_the_entries(redis_client):
    """Redis forgets scripts when it restarts: the worker's EVALSHA of the results fails
    once, EVAL loads it; the entries are plain XADDs."""
    model = loaded_model(estimator=Constant())
    jobs = [predict_job("j", [[1, 2]], FEATURES)]
    for round_ in range(2):
        redis_client.script_flush()
        run_message(
            redis_client, Cache(model), jobs, task_id=f"t{round_}", ttl=60, max_attempts=3,
            settings=get_settings(),
        )  # fmt: skip
    assert [e["job"] for e in read_recent(redis_client, "iris", 10)] == ["j", "j"]


def test_every_heartbeat_loads_the_script_redis_forgot(redis_client):
    """So the first message after a Redis restart stores its results in one round trip."""
    settings = get_settings()
    store = open_store(settings)
    rt = Runtime(settings=settings, store=store, redis=redis_client, cache=serving_cache(store))
    redis_client.script_flush()
    assert redis_client.script_exists(STORE_AND_PUBLISH_SHA) == [False]
    rt.heartbeat_once()
    assert redis_client.script_exists(STORE_AND_PUBLISH_SHA) == [True]

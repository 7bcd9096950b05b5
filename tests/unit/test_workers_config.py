"""workers/config.py: the Celery settings at-least-once delivery and safety depend on."""

from __future__ import annotations

from core.messages import PREDICT_QUEUE, PREDICT_TASK, RETRAIN_TASK, TRAIN_QUEUE
from core.settings import get_settings
from workers import create_app
from workers.config import celery_config


def test_json_only():
    config = celery_config(get_settings())
    assert config["accept_content"] == ["json"]
    assert config["result_accept_content"] == ["json"]
    assert config["task_serializer"] == config["result_serializer"] == "json"
    assert config["event_serializer"] == "json"


def test_acks_late_and_requeue_when_the_worker_dies():
    config = celery_config(get_settings())
    assert config["task_acks_late"] is True
    assert config["task_reject_on_worker_lost"] is True
    assert config["worker_prefetch_multiplier"] == get_settings().worker.prefetch_multiplier


def test_visibility_timeout_exceeds_every_time_limit(monkeypatch):
    settings = get_settings()
    timeout = celery_config(settings)["broker_transport_options"]["visibility_timeout"]
    assert timeout == settings.worker.visibility_timeout
    assert timeout > settings.worker.predict_time_limit
    assert timeout > settings.worker.retrain_time_limit


def test_tasks_routed_to_their_queues_and_registered_with_limits():
    settings = get_settings()
    app = create_app(settings)
    assert app.conf.task_routes[PREDICT_TASK] == {"queue": PREDICT_QUEUE}
    assert app.conf.task_routes[RETRAIN_TASK] == {"queue": TRAIN_QUEUE}
    assert app.tasks[RETRAIN_TASK].time_limit == settings.worker.retrain_time_limit
    assert app.tasks[PREDICT_TASK].time_limit == settings.worker.predict_time_limit
    assert app.tasks[PREDICT_TASK].ignore_result is True
    assert app.tasks[RETRAIN_TASK].ignore_result is False  # GET /jobs reads its result
    assert app.conf.broker_url == settings.redis_url
    assert app.conf.task_track_started is True


def test_each_app_runs_its_own_settings(monkeypatch):
    """Tasks are not shared between apps: a second app gets its own time limits."""
    from core.settings import reset_settings

    first = create_app(get_settings())
    monkeypatch.setenv("MLOPS_WORKER__RETRAIN_TIME_LIMIT", "77")
    reset_settings()
    second = create_app(get_settings())
    assert first.tasks[RETRAIN_TASK].time_limit == 1800
    assert second.tasks[RETRAIN_TASK].time_limit == 77
    assert second.tasks[RETRAIN_TASK].app is second

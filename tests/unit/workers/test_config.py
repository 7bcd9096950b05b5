"""workers/config.py: the Celery settings at-least-once delivery and safety depend on."""

from __future__ import annotations

from core.messages import PREDICT_QUEUE, PREDICT_TASK, RETRAIN_TASK, TRAIN_QUEUE
from core.settings import RESTORE_SWEEP_SECONDS, get_settings
from workers.celery_app import create_app
from workers.config import celery_config
from workers.recovery import UNACKED_INDEX_KEY, UNACKED_KEY


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


def test_a_dead_nodes_messages_are_swept_every_second_under_the_renewed_key_names():
    settings = get_settings()
    options = celery_config(settings)["broker_transport_options"]
    assert options["visibility_timeout"] == settings.worker.visibility_timeout == 10
    # the keys workers/recovery.py renews are the ones kombu writes
    assert options["unacked_key"] == UNACKED_KEY
    assert options["unacked_index_key"] == UNACKED_INDEX_KEY
    assert options["unacked_restore_interval"] == RESTORE_SWEEP_SECONDS == 1
    assert options["unacked_restore_throttle"] == 1
    # a node killed mid-sweep blocks sweeps no longer than its own messages take to be due
    assert 0 < options["unacked_mutex_expire"] <= options["visibility_timeout"]


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

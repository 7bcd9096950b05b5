"""The Celery app, built from the settings object (``celery -A workers worker|beat|flower``)."""

from __future__ import annotations

from celery import Celery, signals
from loguru import logger

from core.logging import setup_logging
from core.settings import get_settings
from workers import runtime as runtime_module
from workers.config import celery_config
from workers.schedule import beat_schedule
from workers.tasks import register_tasks


def create_app(settings=None) -> Celery:
    settings = settings or get_settings()
    app = Celery("workers")
    app.conf.update(celery_config(settings))
    app.conf.beat_schedule = beat_schedule(settings)
    register_tasks(app, settings)
    return app


@signals.setup_logging.connect
def _route_logging(**_kwargs) -> None:
    setup_logging(get_settings(), "worker")


@signals.celeryd_after_setup.connect
def _remember_queues(sender, instance, **_kwargs) -> None:
    runtime_module.CONSUMED_QUEUES[:] = sorted(instance.app.amqp.queues.consume_from or {})
    runtime_module.NODE["name"] = str(sender)


@signals.worker_process_init.connect
def _start_child(**_kwargs) -> None:
    """Prefork child: load the production model and start the heartbeat before any task."""
    rt = runtime_module.runtime()
    try:
        rt.heartbeat_once()
    except Exception as exc:  # Redis not up yet: the heartbeat thread keeps trying
        logger.warning("first heartbeat failed: {}", exc)
    rt.start_heartbeat()


@signals.worker_ready.connect
def _start_inline_pool(sender, **_kwargs) -> None:
    """solo/threads pools have no child processes: the main process serves."""
    if sender.pool_cls.__module__.split(".")[-1] in ("solo", "threads"):
        _start_child()


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _stop_child(**_kwargs) -> None:
    if runtime_module.runtime.cache_info().currsize:
        runtime_module.runtime().stop()

"""The Celery app, built from a settings object: :func:`create_app`.

``celery -A workers worker|beat|flower`` finds it in ``workers/celery.py`` (Celery's documented
layout); importing any other module of ``workers`` builds nothing and changes nothing. The
signal handlers below are connected by :func:`create_app` and read the settings it was given
(``workers.runtime.app_settings``), never a global of their own.
"""

from __future__ import annotations

import os

from celery import Celery, signals
from loguru import logger

from core.heap import freeze_startup_heap
from core.logging import setup_logging
from core.messages import TRAIN_QUEUE
from core.settings import Settings, get_settings
from workers import broker, fastjson, recovery
from workers import metrics as metrics_module
from workers import runtime as runtime_module
from workers.config import celery_config
from workers.schedule import beat_schedule
from workers.tasks import register_tasks


def create_app(settings: Settings | None = None) -> Celery:
    """The app for ``settings`` (default: this process's, from the environment)."""
    settings = settings or get_settings()
    runtime_module.configure(settings)
    fastjson.install()
    broker.install()  # acknowledgements ride along with the next message (workers/broker.py)
    recovery.guard_restore_on_close()
    app = Celery("workers")
    app.conf.update(celery_config(settings))
    app.conf.beat_schedule = beat_schedule(settings)
    register_tasks(app, settings)
    for signal, handler in SIGNAL_HANDLERS:
        signal.connect(handler, weak=False, dispatch_uid=f"mlops.{handler.__name__}")
    return app


def _route_logging(**_kwargs) -> None:
    setup_logging(runtime_module.app_settings(), "worker")


def _check_store(**_kwargs) -> None:
    """`celery worker` and `beat` stop at start-up, naming the URL, when the object store does
    not answer (core/store.py check_storage)."""
    from core.store import check_storage

    check_storage(runtime_module.app_settings())


def _check_trainers(**_kwargs) -> None:
    """`celery worker` and `beat` stop at start-up, naming the model, when a model's trainer
    does not exist (its retrains would all fail). The gateway cannot check: no trainers there."""
    from training.registry import check_trainers

    check_trainers(runtime_module.app_settings())


def _check_sentinels(**_kwargs) -> None:
    """With a sentinel:// URL, `celery worker` and `beat` stop at start-up, naming the URL,
    when no sentinel answers or knows the master (kombu would retry for ever, silently)."""
    from core.redis import SentinelUnreachable, check_sentinels

    try:
        check_sentinels(runtime_module.app_settings().redis_url)
    except SentinelUnreachable as exc:
        raise SystemExit(f"redis_url: {exc}") from None


def _check_redis_version(**_kwargs) -> None:
    """`celery worker` stops at start-up, naming the version, on a Redis too old for its
    scripts (core/redis.py ``check_version``)."""
    from core.redis import RedisTooOld, check_version, mask

    url = runtime_module.app_settings().redis_url
    try:
        check_version(url)
    except RedisTooOld as exc:
        raise SystemExit(f"redis_url {mask(url)}: {exc}") from None


def _prepare_metrics(sender, **_kwargs) -> None:
    """`celery worker` only (not beat/flower), before the pool forks: multiprocess metrics."""
    metrics_module.prepare_multiprocess(runtime_module.app_settings(), str(sender))


def _remember_queues(sender, instance, **_kwargs) -> None:
    runtime_module.CONSUMED_QUEUES[:] = sorted(instance.app.amqp.queues.consume_from or {})
    runtime_module.NODE["name"] = str(sender)


def _start_child(report: bool = True, **_kwargs) -> None:
    """Prefork child: load the production model and start the heartbeat before any task.
    ``report=False``: the main process serving at home (workers/pool.py) loads and follows
    the model without a heartbeat of its own."""
    from workers import array_inputs

    array_inputs.install()  # before the first prediction: scikit-learn's checks, shortened
    rt = runtime_module.runtime()
    metrics = metrics_module.worker_metrics()
    rt.cache.on_load = metrics.model_loaded
    rt.cache.on_serve = metrics.model_served
    if report and TRAIN_QUEUE in runtime_module.CONSUMED_QUEUES:
        metrics.declare_models(rt.settings.models)
    try:
        rt.heartbeat_once() if report else rt.cache.refresh()
    except Exception as exc:  # Redis not up yet: the heartbeat thread keeps trying
        logger.warning("first heartbeat failed: {}", exc)
    rt.start_heartbeat(report=report)
    freeze_startup_heap()  # with the model loaded


def _serve_metrics(**_kwargs) -> None:
    """The main process answers Prometheus for the whole node (all pool children)."""
    metrics_module.start_metrics_server(runtime_module.app_settings())


def _renew_held_messages(**_kwargs) -> None:
    """The main process renews the messages this node holds, so only a dead node's come back."""
    recovery.start_renewer(runtime_module.app_settings())


def _watch_failover(sender, **_kwargs) -> None:
    """The main process fails the jobs a Redis failover lost (workers/failover.py)."""
    from workers.failover import start_watch

    start_watch(runtime_module.app_settings(), str(getattr(sender, "hostname", sender)))


def _start_flusher(**_kwargs) -> None:
    """The main process moves prediction logs and labels to the store (workers/flusher.py)."""
    from workers.flusher import start_flusher

    start_flusher(runtime_module.app_settings())


def _freeze_main_heap(**_kwargs) -> None:
    freeze_startup_heap()  # core/heap.py; children freeze theirs in _start_child


def _start_inline_pool(sender, **_kwargs) -> None:
    """solo/threads pools have no child processes: the main process serves. Ours serves
    messages sent alone at home (workers/pool.py): its models load now, not on the first.

    The sender is the worker's Consumer (not the WorkController), so ask its pool instance.
    """
    pool = getattr(sender, "pool", None)
    if type(pool).__module__.split(".")[-1] in ("solo", "thread"):  # celery.concurrency.*
        _start_child()
    elif getattr(pool, "runs_at_home", False):
        _start_child(report=False)


def _forget_child_metrics(pid=None, **_kwargs) -> None:
    metrics_module.mark_child_dead(pid or os.getpid())


def _stop_child(**_kwargs) -> None:
    if runtime_module.runtime.cache_info().currsize:
        runtime_module.runtime().stop()


SIGNAL_HANDLERS = (
    (signals.setup_logging, _route_logging),
    (signals.celeryd_init, _check_sentinels),
    (signals.beat_init, _check_sentinels),
    (signals.celeryd_init, _check_redis_version),
    (signals.celeryd_init, _check_store),
    (signals.beat_init, _check_store),
    (signals.celeryd_init, _check_trainers),
    (signals.beat_init, _check_trainers),
    (signals.celeryd_init, _prepare_metrics),
    (signals.celeryd_after_setup, _remember_queues),
    (signals.worker_process_init, _start_child),
    (signals.worker_ready, _serve_metrics),
    (signals.worker_ready, _renew_held_messages),
    (signals.worker_ready, _watch_failover),
    (signals.worker_ready, _start_flusher),
    (signals.worker_ready, _freeze_main_heap),
    (signals.worker_ready, _start_inline_pool),
    (signals.worker_process_shutdown, _forget_child_metrics),
    (signals.worker_process_shutdown, _stop_child),
    (signals.worker_shutdown, _stop_child),
)

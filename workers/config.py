"""Every Celery setting this project relies on, chosen and explained in one place.

Celery with Redis gives at-least-once delivery only with the right settings; each line
below says which failure it guards against.
"""

from __future__ import annotations

from kombu import Exchange, Queue

from core.messages import MONITOR_TASK, PREDICT_QUEUE, PREDICT_TASK, RETRAIN_TASK, TRAIN_QUEUE
from core.redis import celery_url, ssl_options, transport_options
from core.settings import RESTORE_SWEEP_SECONDS, Settings
from workers.recovery import UNACKED_INDEX_KEY, UNACKED_KEY, UNACKED_MUTEX_KEY


def consumed_queues(settings: Settings) -> list[str]:
    """Every queue the service uses: "predict", each model's own, "train"."""
    predict = {PREDICT_QUEUE, *(model.queue for model in settings.models.values())}
    return [*sorted(predict), TRAIN_QUEUE]


def celery_config(settings: Settings) -> dict:
    worker = settings.worker
    return {
        # A sentinel:// URL becomes kombu's and Celery's list of sentinels; the master's name
        # travels in the transport options (core/redis.py).
        "broker_url": celery_url(settings.redis_url),
        "result_backend": celery_url(settings.redis_url),
        # rediss:// verifies the server certificate (kombu alone would not); core/redis.py.
        "broker_use_ssl": ssl_options(settings.redis_url) or False,
        "redis_backend_use_ssl": ssl_options(settings.redis_url) or False,
        # JSON only: with pickle, anyone who can write to Redis runs code on the workers.
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # Acknowledge after the task ran, so a worker that dies mid-task does not lose it...
        "task_acks_late": True,
        # ...and when the child process is killed (OOM, SIGKILL) the message is requeued at
        # once. A job that kills its worker every time is stopped by the attempt counters of
        # workers/batches.py (a retrain: workers/retrain.py) after worker.max_retries_on_crash
        # attempts.
        "task_reject_on_worker_lost": True,
        # A task that raised or hit its time limit is finished (FAILURE), not redelivered.
        "task_acks_on_failure_or_timeout": True,
        # Prefetch little: messages already carry a batch of jobs, and the messages a node
        # prefetched wait for it (or, if it dies, for the redelivery below).
        "worker_prefetch_multiplier": worker.prefetch_multiplier,
        "worker_concurrency": worker.concurrency,
        # Celery's prefork pool, handing each task to an idle pool process at once rather than
        # on the event loop's next turn (workers/pool.py); `-P` still picks another.
        "worker_pool": "workers.pool:TaskPool",
        # Recycle children now and then to bound slow leaks in native libraries.
        "worker_max_tasks_per_child": worker.max_tasks_per_child,
        # A node killed whole (SIGKILL, OOM, a lost VM) acknowledges nothing: kombu keeps its
        # messages in the `unacked` hash and puts each back on its queue once it was
        # delivered longer than the visibility timeout ago. A live node renews the delivery
        # time of everything it holds every worker.heartbeat_seconds (workers/recovery.py),
        # so a 30-minute retrain is never delivered twice and the timeout can be 10 s: a dead
        # node's jobs run elsewhere after at most the redelivery bound of core/settings.py,
        # which settings validation keeps below every job deadline.
        "broker_transport_options": {
            **transport_options(settings.redis_url),
            "visibility_timeout": worker.visibility_timeout,
            "unacked_key": UNACKED_KEY,  # the names workers/recovery.py renews
            "unacked_index_key": UNACKED_INDEX_KEY,
            "unacked_mutex_key": UNACKED_MUTEX_KEY,
            # Every node sweeps every second (kombu: 10 s); a sweep with nothing due is three
            # Redis round trips, 1.4 ms of the main process's loop (measured on this machine)...
            "unacked_restore_interval": RESTORE_SWEEP_SECONDS,
            # ...and really looks each time: kombu scans only every 10th sweep by default.
            "unacked_restore_throttle": 1,
            # One node sweeps at a time, under a mutex with an expiry: a node killed while
            # sweeping stops every sweep until it expires (kombu: 300 s). A sweep takes
            # milliseconds, and two at once are safe (kombu moves each message back in a WATCH
            # transaction); within the visibility timeout, the killed node's own messages are
            # not due before it expires.
            "unacked_mutex_expire": min(worker.visibility_timeout, 5),
        },
        "result_backend_transport_options": transport_options(settings.redis_url),
        "redis_socket_timeout": 5.0,
        "redis_socket_connect_timeout": 2.0,
        "redis_backend_health_check_interval": 10,
        "redis_retry_on_timeout": True,
        # Keep trying to reach Redis forever, at start-up too (a worker started before Redis
        # waits for it); cancel acks-late tasks whose connection died, they come back anyway.
        "broker_connection_retry": True,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # Results (and the gateway's job records) expire: Redis must not fill up.
        "result_expires": settings.api.jobs_ttl_seconds,
        "result_extended": True,
        "task_track_started": True,
        # Task events cost three Redis publishes per message, so they are off until someone
        # watches: Flower switches them on at its start and keeps them on while it runs.
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        "task_routes": {
            PREDICT_TASK: {"queue": PREDICT_QUEUE},
            RETRAIN_TASK: {"queue": TRAIN_QUEUE},
            MONITOR_TASK: {"queue": PREDICT_QUEUE},  # beat names each model's own queue
        },
        "task_default_queue": PREDICT_QUEUE,
        # Every queue the service uses: a plain `celery -A workers worker` consumes them all
        # (with only a default queue it consumed `predict`, and retrains waited forever);
        # `-Q predict` or `-Q train` still specialises a node.
        "task_queues": tuple(
            Queue(name, Exchange(name), routing_key=name) for name in consumed_queues(settings)
        ),
        "task_create_missing_queues": True,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "beat_schedule": {},
        # Beat queues retrains through the single flight (workers/schedule.py).
        "beat_scheduler": "workers.schedule:SingleFlightScheduler",
        "timezone": "UTC",
    }

"""Per-process state of a worker: settings, stores, Redis client, model caches, heartbeat.

Built lazily after the fork (a Redis connection must never cross a fork), once per process.
``store``/``cache`` are the default model's; :meth:`Runtime.cache_for` gives any other's,
built on first use and sharing one memory-bounded pool (workers/model_cache.py).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson
import redis
from loguru import logger

from core.errors import ModelNotFound
from core.messages import WORKERS_KEY
from core.redis import sync_client
from core.settings import MODEL_NAME, Settings
from core.store import ModelStore, open_store
from core.tracing import tracer_for
from workers.model_cache import ModelCache, ModelPool
from workers.results import STORE_AND_PUBLISH

if TYPE_CHECKING:
    from core.otel import Tracer

CONSUMED_QUEUES: list[str] = []  # filled in the main process before the pool forks
NODE = {"name": socket.gethostname()}  # the Celery node name (celery@host), likewise


@dataclass
class Runtime:
    settings: Settings
    store: ModelStore
    redis: redis.Redis
    cache: ModelCache
    tracer: Tracer | None = None  # None: tracing is off (core/tracing.py)
    identity: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    _stop: threading.Event = field(default_factory=threading.Event)
    _caches: dict[str, ModelCache] = field(default_factory=dict)

    def cache_for(self, model: str | None) -> ModelCache:
        """The cache of ``model`` (None or the default: ``cache``); ModelNotFound for a name
        that cannot be a model (it becomes a folder name: nothing else may pass)."""
        if model is None or model == self.store.model_name:
            return self.cache
        cache = self._caches.get(model)
        if cache is None:
            if not re.fullmatch(MODEL_NAME, model):
                raise ModelNotFound(f"{model!r} is not a model name")
            store = open_store(self.settings, model)
            cache = ModelCache(
                store, functools.partial(_load, store, self.settings), self.cache.pool
            )
            cache.on_load, cache.on_serve = self.cache.on_load, self.cache.on_serve
            self._caches[model] = cache
        return cache

    def caches(self) -> list[ModelCache]:
        return [self.cache, *self._caches.values()]

    def heartbeat_once(self) -> None:
        """Follow the production aliases and report this process's queues and versions."""
        for cache in self.caches():
            try:
                cache.refresh()
            except Exception as exc:  # a broken alias file must not kill the heartbeat
                logger.warning("model refresh of {} failed: {}", cache.store.model_name, exc)
        beat = {
            "id": self.identity,
            "node": NODE["name"],
            "pid": os.getpid(),
            "queues": CONSUMED_QUEUES,
            "model_name": self.store.model_name,  # the default model's, as before
            "model_version": self.cache.served_version,
            "models": {c.store.model_name: c.served_version for c in self.caches()},
            "ts": time.time(),
        }
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(WORKERS_KEY, self.identity, orjson.dumps(beat))
        # The script the pool processes call by its SHA (workers/results.py): loaded before
        # the first message and again after Redis restarted (it forgets scripts).
        pipe.script_load(STORE_AND_PUBLISH)
        pipe.execute()

    def start_heartbeat(self, report: bool = True) -> None:
        """Follow the production aliases every ``model_poll_seconds``; with ``report``, beat
        too. A node's main process serving at home (workers/pool.py) does not report: the
        gateway counts the processes that beat as the queue's capacity."""
        interval = min(
            self.settings.worker.heartbeat_seconds, self.settings.worker.model_poll_seconds
        )

        def loop() -> None:
            last_beat = 0.0
            while not self._stop.wait(interval):
                beat_due = time.monotonic() - last_beat >= self.settings.worker.heartbeat_seconds
                if not (report and beat_due):
                    for cache in self.caches():
                        try:
                            cache.refresh()
                        except Exception as exc:
                            logger.warning("model refresh failed: {}", exc)
                    continue
                last_beat = time.monotonic()
                try:
                    self.heartbeat_once()
                except redis.RedisError as exc:
                    logger.warning("heartbeat failed: {}", exc)

        threading.Thread(target=loop, name="heartbeat", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(redis.RedisError):
            self.redis.hdel(WORKERS_KEY, self.identity)
        if self.tracer is not None:
            self.tracer.shutdown()  # sends what is queued, within one export timeout


def _load(store: ModelStore, settings: Settings, version: int):
    from training.serialization import load_model

    return load_model(store, version, settings)


_APP_SETTINGS: list[Settings] = []  # of the Celery app this process runs


def configure(settings: Settings) -> None:
    """``create_app(settings)`` calls this: the signal handlers and the per-process runtime of
    this process use these settings, not a global of their own."""
    _APP_SETTINGS[:] = [settings]
    runtime.cache_clear()


def app_settings() -> Settings:
    if not _APP_SETTINGS:
        raise RuntimeError("no Celery app in this process: call workers.celery_app.create_app()")
    return _APP_SETTINGS[0]


@functools.cache
def runtime() -> Runtime:
    """This process's. A pool process forked after the main process built its own (to serve
    at home, workers/pool.py) builds another: see the fork hook below."""
    settings = app_settings()
    store = open_store(settings)
    pool = ModelPool(settings.worker.model_cache_bytes)
    cache = ModelCache(store, functools.partial(_load, store, settings), pool)
    return Runtime(
        settings=settings,
        store=store,
        redis=sync_client(settings.redis_url),
        cache=cache,
        tracer=tracer_for(settings, "worker", on_dropped=_count_dropped_spans),
    )


def _count_dropped_spans(count: int) -> None:
    from workers.metrics import worker_metrics

    worker_metrics().trace_spans_dropped.inc(count)


# A Redis connection, a thread and a process identity must not cross a fork.
os.register_at_fork(after_in_child=runtime.cache_clear)

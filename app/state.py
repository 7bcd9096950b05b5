"""Everything a request needs, built once per process from the settings object."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import redis.asyncio as aioredis
from loguru import logger

from app.auth import KeyRing
from app.metrics import SERVER_STATS, GatewayMetrics, watch_event_loop
from app.services.admission import Admission
from app.services.catalog import ModelCatalog, ModelCatalogs
from app.services.feedback import live_quality
from app.services.listener import ResultListener
from app.services.monitoring import latest_of
from app.services.submitter import JobSubmitter
from app.services.workers import WorkerView, consumers
from core.messages import PREDICT_QUEUE, TRAIN_QUEUE, waited
from core.redis import async_client
from core.settings import Settings

if TYPE_CHECKING:
    from core.otel import Tracer

WORKERS_EVERY = 4  # watcher turns (0.25 s) between two reads of the heartbeats and oldest jobs
DRIFT_EVERY = 20  # ...and of the drift checks' results (checked every few minutes)
QUALITY_EVERY = 20  # ...and of the live-quality windows (core/feedback.py)


@dataclass
class Gateway:
    settings: Settings
    redis: aioredis.Redis
    submitter: JobSubmitter
    listener: ResultListener
    catalogs: ModelCatalogs
    keys: KeyRing
    admission: Admission
    workers: WorkerView = field(default_factory=WorkerView)
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)
    tracer: Tracer | None = None  # None: tracing is off
    _tasks: list[asyncio.Task] = field(default_factory=list)

    @property
    def catalog(self) -> ModelCatalog:
        """The default model's catalog (the routes that name no model)."""
        return self.catalogs.default

    def queue_of(self, model: str) -> str:
        """The predict queue of ``model``: its settings' ``queue``, or the default one for a
        model found in the store without a settings table."""
        configured = self.settings.models.get(model)
        return configured.queue if configured is not None else PREDICT_QUEUE

    def predict_queues(self) -> list[str]:
        return sorted({PREDICT_QUEUE, *(m.queue for m in self.settings.models.values())})

    def queues(self) -> tuple[str, ...]:
        return (*self.predict_queues(), TRAIN_QUEUE)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        metrics: GatewayMetrics | None = None,
        tracer: Tracer | None = None,
    ) -> Gateway:
        metrics = metrics if metrics is not None else GatewayMetrics()
        timeout = settings.api.redis_timeout_seconds
        client = async_client(settings.redis_url, socket_timeout=timeout)
        listener_client = async_client(settings.redis_url, socket_timeout=None)
        admission = Admission(
            max_queue_depth=settings.api.max_queue_depth,
            max_queue_bytes=settings.api.max_queue_bytes,
            memory_backpressure=settings.api.memory_backpressure,
            retry_after=settings.api.retry_after_seconds,
        )
        workers = WorkerView()  # the heartbeats: how many worker processes consume each queue
        submitter = JobSubmitter(
            client,
            admission=admission,
            models=settings.models,
            max_rows=settings.batching.max_batch_size,
            max_wait_ms=settings.batching.max_wait_ms,
            backlog_wait_ms=settings.batching.backlog_wait_ms,
            ttl=settings.api.jobs_ttl_seconds,
            idempotency_window=settings.api.idempotency_window_seconds,
            metrics=metrics,
            replica_ack_ms=settings.api.replica_ack_ms,
            tracer=tracer,
            capacity=workers.consumers,
            arrivals=lambda: SERVER_STATS.posts,
        )
        return cls(
            settings=settings,
            redis=client,
            admission=admission,
            submitter=submitter,
            listener=ResultListener(listener_client, on_results=submitter.answered),
            workers=workers,
            catalogs=ModelCatalogs.from_settings(settings),
            keys=KeyRing(settings.auth.api_keys, enabled=settings.auth.enabled),
            metrics=metrics,
            tracer=tracer,
        )

    async def start(self) -> None:
        if not self.keys.enabled:
            logger.warning("auth is DISABLED (auth.enabled=false): for local development only")
        elif not len(self.keys):
            logger.warning("no API keys configured: every protected endpoint answers 401")
        await self.catalogs.refresh()
        self.catalogs.start()
        self.listener.start()
        self._tasks.append(asyncio.create_task(self._watch_queue(), name="queue-depth"))
        self._tasks.append(asyncio.create_task(watch_event_loop(self.metrics), name="loop-lag"))

    async def _watch_queue(self) -> None:
        """Keep admission's readings, the queue metrics and the worker view fresh, idle or not."""
        turn = 0
        heartbeat = self.settings.worker.heartbeat_seconds
        while True:
            with contextlib.suppress(Exception):
                await self._read_queues()
            if turn % WORKERS_EVERY == 0:
                with contextlib.suppress(Exception):
                    await self.workers.refresh(self.redis, heartbeat)
                    for queue, live in consumers(self.workers.workers, self.queues()).items():
                        self.metrics.workers_live.labels(queue).set(live)
                with contextlib.suppress(Exception):
                    await self._read_oldest()
            if turn % DRIFT_EVERY == 0:
                with contextlib.suppress(Exception):
                    await self._read_drift()
            if turn % QUALITY_EVERY == 0:
                with contextlib.suppress(Exception):
                    await self._read_quality()
            turn += 1
            await asyncio.sleep(0.25)

    async def _read_queues(self) -> None:
        """Admission judges the predict backlog as a whole: every model's queue summed."""
        queues = self.predict_queues()
        async with self.redis.pipeline(transaction=False) as pipe:
            for queue in self.queues():
                pipe.llen(queue)
            for queue in queues:
                pipe.memory_usage(queue)
            pipe.info("memory")
            # Each reply on its own: a Redis that refuses INFO or MEMORY (an ACL without
            # @dangerous, some managed services) must not switch off the other checks.
            replies = await pipe.execute(raise_on_error=False)
        lengths, sizes, memory = (
            replies[: len(queues) + 1],
            replies[len(queues) + 1 : -1],
            replies[-1],
        )
        depth = 0
        for queue, length in zip(self.queues(), lengths, strict=True):
            if isinstance(length, Exception):
                continue
            self.metrics.set_queue_depth(queue, int(length))
            if queue != TRAIN_QUEUE:
                depth += int(length)
        if not any(isinstance(length, Exception) for length in lengths[:-1]):
            self.admission.queue_depth = depth
        if not any(isinstance(size, Exception) for size in sizes):
            self.admission.queue_bytes = sum(int(size or 0) for size in sizes)  # None: empty
        if isinstance(memory, dict):
            self.admission.observe_memory(memory)
            self.metrics.redis_memory_used.set(self.admission.used_memory)
            self.metrics.redis_memory_max.set(self.admission.maxmemory)

    async def _read_quality(self) -> None:
        """Every model's live quality, for /metrics (each gateway reads the shared windows)."""
        for name in self.catalogs.names():
            self.metrics.set_live_quality(name, await live_quality(self.redis, name))

    async def _read_oldest(self) -> None:
        """How long each queue's oldest message (kombu LPUSHes and BRPOPs: the last) has waited.

        LINDEX fetches the whole message, up to api.max_body_bytes: 0.3 ms of this process's
        CPU for a 240 KB one, once a second (a Lua script returning its first bytes cost Redis
        0.5 ms of its only thread instead; measured on the 2-core machine)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for queue in self.queues():
                pipe.lindex(queue, -1)
            oldest = await pipe.execute(raise_on_error=False)
        now = time.time()
        for queue, message in zip(self.queues(), oldest, strict=True):
            if not isinstance(message, Exception):
                self.metrics.oldest_job_age.labels(queue).set(waited(message, now))

    async def _read_drift(self) -> None:
        """The latest drift check of every model, for the drift metrics."""
        self.metrics.drift.results = await latest_of(self.redis, self.catalogs.names())

    async def stop(self) -> None:
        await self.submitter.drain()
        for task in self._tasks:
            task.cancel()
        await self.listener.stop()
        await self.catalogs.stop()
        await self.redis.aclose()
        await self.listener.client.aclose()

"""Everything a request needs, built once per process from the settings object."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from loguru import logger

from app.auth import KeyRing
from app.metrics import GatewayMetrics, watch_event_loop
from app.services.admission import Admission
from app.services.catalog import ModelCatalog
from app.services.listener import ResultListener
from app.services.submitter import JobSubmitter
from app.services.workers import WorkerView
from core.messages import PREDICT_QUEUE, TRAIN_QUEUE
from core.redis import async_client
from core.settings import Settings
from core.store import open_store

WORKERS_EVERY = 4  # watcher turns (0.25 s) between two reads of the worker heartbeats


@dataclass
class Gateway:
    settings: Settings
    redis: aioredis.Redis
    submitter: JobSubmitter
    listener: ResultListener
    catalog: ModelCatalog
    keys: KeyRing
    admission: Admission
    workers: WorkerView = field(default_factory=WorkerView)
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)
    _tasks: list[asyncio.Task] = field(default_factory=list)

    @classmethod
    def from_settings(cls, settings: Settings, metrics: GatewayMetrics | None = None) -> Gateway:
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
        return cls(
            settings=settings,
            redis=client,
            admission=admission,
            submitter=JobSubmitter(
                client,
                admission=admission,
                max_rows=settings.batching.max_batch_size,
                max_wait_ms=settings.batching.max_wait_ms,
                backlog_wait_ms=settings.batching.backlog_wait_ms,
                ttl=settings.api.jobs_ttl_seconds,
                idempotency_window=settings.api.idempotency_window_seconds,
                metrics=metrics,
            ),
            listener=ResultListener(listener_client),
            catalog=ModelCatalog(open_store(settings)),
            keys=KeyRing(settings.auth.api_keys, enabled=settings.auth.enabled),
            metrics=metrics,
        )

    async def start(self) -> None:
        if not self.keys.enabled:
            logger.warning("auth is DISABLED (auth.enabled=false): for local development only")
        elif not len(self.keys):
            logger.warning("no API keys configured: every protected endpoint answers 401")
        await self.catalog.refresh()
        self.catalog.start()
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
            turn += 1
            await asyncio.sleep(0.25)

    async def _read_queues(self) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.llen(PREDICT_QUEUE)
            pipe.llen(TRAIN_QUEUE)
            pipe.memory_usage(PREDICT_QUEUE)
            pipe.info("memory")
            # Each reply on its own: a Redis that refuses INFO or MEMORY (an ACL without
            # @dangerous, some managed services) must not switch off the other checks.
            predict, train, size, memory = await pipe.execute(raise_on_error=False)
        if not isinstance(predict, Exception):
            self.admission.queue_depth = int(predict)
            self.metrics.set_queue_depth(PREDICT_QUEUE, int(predict))
        if not isinstance(train, Exception):
            self.metrics.set_queue_depth(TRAIN_QUEUE, int(train))
        if not isinstance(size, Exception):
            self.admission.queue_bytes = int(size or 0)  # None: the queue is empty
        if isinstance(memory, dict):
            self.admission.observe_memory(memory)

    async def stop(self) -> None:
        await self.submitter.drain()
        for task in self._tasks:
            task.cancel()
        await self.listener.stop()
        await self.catalog.stop()
        await self.redis.aclose()
        await self.listener.client.aclose()

"""Everything a request needs, built once per process from the settings object."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from loguru import logger

from app.auth import KeyRing
from app.services.catalog import ModelCatalog
from app.services.listener import ResultListener
from app.services.submitter import JobSubmitter
from core.messages import PREDICT_QUEUE
from core.redis import async_client
from core.store import open_store


@dataclass
class Gateway:
    settings: object
    redis: aioredis.Redis
    submitter: JobSubmitter
    listener: ResultListener
    catalog: ModelCatalog
    keys: KeyRing
    _tasks: list[asyncio.Task] = field(default_factory=list)

    @classmethod
    def from_settings(cls, settings) -> Gateway:
        timeout = settings.api.redis_timeout_seconds
        client = async_client(settings.redis_url, socket_timeout=timeout)
        listener_client = async_client(settings.redis_url, socket_timeout=None)
        return cls(
            settings=settings,
            redis=client,
            submitter=JobSubmitter(
                client,
                max_rows=settings.batching.max_batch_size,
                max_wait_ms=settings.batching.max_wait_ms,
                ttl=settings.api.jobs_ttl_seconds,
            ),
            listener=ResultListener(listener_client),
            catalog=ModelCatalog(open_store(settings)),
            keys=KeyRing(settings.auth.api_keys, enabled=settings.auth.enabled),
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

    async def _watch_queue(self) -> None:
        """Keep the predict queue depth fresh for admission control even when idle."""
        while True:
            with contextlib.suppress(Exception):
                self.submitter.queue_depth = int(await self.redis.llen(PREDICT_QUEUE))
            await asyncio.sleep(0.25)

    async def stop(self) -> None:
        await self.submitter.drain()
        for task in self._tasks:
            task.cancel()
        await self.listener.stop()
        await self.catalog.stop()
        await self.redis.aclose()
        await self.listener.client.aclose()

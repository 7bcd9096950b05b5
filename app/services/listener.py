"""One pub/sub subscription per gateway process wakes every request waiting for a result.

Workers publish one message per finished batch on ``mlops:results``; this listener hands each
job's result to the future its request registered. No per-request subscription, no thread.
A result published while the subscription was down is not lost: the waiting request reads
the job record once before it answers 202.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import redis.asyncio as aioredis
from loguru import logger

from core.messages import RESULTS_CHANNEL, unpack_results


class ResultListener:
    def __init__(self, client: aioredis.Redis, on_results: Callable[[list], None] | None = None):
        self.client = client
        self.on_results = on_results  # each results message's job ids (the submitter's hook)
        self.connected = False
        self._waiters: dict[str, asyncio.Future] = {}
        self._task: asyncio.Task | None = None

    def register(self, job_id: str) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self._waiters[job_id] = future
        return future

    def discard(self, job_id: str) -> None:
        self._waiters.pop(job_id, None)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="result-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        delay = 0.1
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(RESULTS_CHANNEL)
                self.connected, delay = True, 0.1
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._dispatch(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis went away: resubscribe with backoff
                if self.connected:
                    logger.warning("result listener lost Redis: {}", exc)
                self.connected = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _dispatch(self, data: bytes) -> None:
        """Hand each awaited job its raw result bytes; results nobody here awaits stay unparsed."""
        if not self._waiters:
            return
        try:
            job_ids, raw_results = unpack_results(data)
        except ValueError:  # includes orjson.JSONDecodeError; must not break the subscription
            logger.warning("ignoring a malformed results message")
            return
        for job_id, raw in zip(job_ids, raw_results, strict=True):
            future = self._waiters.pop(job_id, None) if isinstance(job_id, str) else None
            if future is not None and not future.done():
                future.set_result(raw)
        if self.on_results is not None:
            self.on_results(job_ids)

"""Group the predict jobs of a few milliseconds into one Celery message.

Every job keeps its own id, record and result; what is shared is the cost of a message: one
MULTI/EXEC round trip to Redis that writes the job records and LPUSHes one task message, and
on the worker one Celery delivery and one scikit-learn call. A request returns only after its
group is in Redis, so an accepted job is never only in this process's memory.

Logging follows the same grouping: one INFO line per message with every job_id and request_id
bound (the worker logs the same lists), per-job lines only at DEBUG.
"""

from __future__ import annotations

import asyncio
import time

import orjson
import redis.asyncio as aioredis
from loguru import logger

from app.metrics import GatewayMetrics
from core.messages import PREDICT_QUEUE, PREDICT_TASK, celery_message, job_key

# One command writes the group's job records and its task message, atomically: cheaper than a
# MULTI of N+1 commands, and nothing is half-written if Redis refuses it (e.g. out of memory,
# which it reports at the first write).
ENQUEUE = """
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 1], 'EX', ARGV[1])
end
return redis.call('LPUSH', KEYS[1], ARGV[2])
"""
BACKLOG = 1  # predict messages queued beyond this mean the workers are behind


class JobSubmitter:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        max_rows: int,
        max_wait_ms: float,
        ttl: int,
        backlog_wait_ms: float | None = None,
        metrics: GatewayMetrics | None = None,
    ):
        self.client = client
        self.metrics = metrics if metrics is not None else GatewayMetrics()
        self.max_rows = max_rows
        self.max_wait = max_wait_ms / 1000
        self.backlog_wait = max(self.max_wait, (backlog_wait_ms or max_wait_ms) / 1000)
        self.ttl = ttl
        self.queue_depth = 0  # predict messages waiting, as of the last write
        self._group: list[dict] = []
        self._rows = 0
        self._done: asyncio.Future | None = None
        self._timer: asyncio.Handle | None = None
        self._behind = False  # the open group was started while workers were behind
        self._closes_at = 0.0  # loop time after which a lingering group closes regardless
        self._seen = 0  # jobs in the group at the last look: did the last loop turn add one?
        self._writes: set[asyncio.Task] = set()
        self._enqueue = client.register_script(ENQUEUE)

    async def submit(self, job: dict) -> None:
        """Queue one job; return once its message is in Redis (raise if Redis refused it)."""
        if self._done is None:
            loop = asyncio.get_running_loop()
            self._done = loop.create_future()
            # Messages already waiting mean the workers are behind: a job would wait in the
            # queue anyway, so the group may stay open longer (up to backlog_wait) to make
            # fewer, larger messages, which are cheaper to run. One waiting message is
            # normal: it waits for the one each worker is running.
            self._behind = self.queue_depth > BACKLOG
            self._closes_at = loop.time() + self.backlog_wait
            self._timer = loop.call_later(self.max_wait, self._on_timer)
        done = self._done
        logger.debug("predict job queued", job_id=job["job_id"], request_id=job.get("request_id"))
        self._group.append(job)
        self._rows += len(job["rows"])
        if self._rows >= self.max_rows:
            self._flush()
        await asyncio.shield(done)

    def _on_timer(self) -> None:
        """Close the group after max_wait; when behind, once a turn of the loop brings no job.

        Holding a group a fixed backlog_wait made every client that sends one request at a
        time wait that long even after all of them had joined (async submits at 16
        connections: about 4,200 req/s). Lingering only while each turn of the event loop
        (each read of the sockets) adds a job still gathers all that a busy stream sends,
        up to backlog_wait, and closes as soon as the stream pauses.
        """
        if not self._behind:
            self._flush()
            return
        loop = asyncio.get_running_loop()
        if len(self._group) != self._seen and loop.time() < self._closes_at:
            self._seen = len(self._group)
            self._timer = loop.call_soon(self._on_timer)  # runs after the next socket poll
            return
        self._flush()

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        group, done = self._group, self._done
        self._group, self._rows, self._done, self._timer = [], 0, None, None
        self._seen = 0
        if not group or done is None:
            return
        task = asyncio.get_running_loop().create_task(self._write(group, done))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, group: list[dict], done: asyncio.Future) -> None:
        # Results go to each job's own key (workers/jobs.py), not to Celery's result backend.
        task_id, payload = celery_message(
            PREDICT_TASK, [group], queue=PREDICT_QUEUE, ignore_result=True
        )
        now = time.time()
        keys, records = [PREDICT_QUEUE], []
        for job in group:
            keys.append(job_key(job["job_id"]))
            record = {
                "job_id": job["job_id"],
                "kind": "predict",
                "status": "PENDING",
                "request_id": job.get("request_id"),
                "task_id": task_id,
                "submitted_at": now,
            }
            records.append(orjson.dumps(record))
        try:
            depth = await self._enqueue(keys=keys, args=[self.ttl, payload, *records])
            self.queue_depth = int(depth) - 1  # messages ahead of this one
        except BaseException as exc:
            if not done.done():
                done.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            _bound(group).warning("predict message {} not queued: {!r}", task_id, exc)
            return
        self.metrics.predict_jobs.inc(len(group))
        _bound(group).info(
            "queued {} predict job(s) as message {} (queue depth {})",
            len(group),
            task_id,
            self.queue_depth,
        )
        if not done.done():
            done.set_result(task_id)

    async def drain(self) -> None:
        """Flush what is buffered and wait for in-flight writes (shutdown)."""
        self._flush()
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)


def _bound(group: list[dict]):
    """A logger carrying every job's ids, comma-joined like the worker's line for the message."""
    return logger.bind(
        job_id=",".join(job["job_id"] for job in group),
        request_id=",".join(str(job.get("request_id")) for job in group),
    )

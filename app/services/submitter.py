"""Group the predict jobs of a few milliseconds into one Celery message.

Every job keeps its own id, record and result; what is shared is the cost of a message: one
call of the Lua script :data:`ENQUEUE`, which LPUSHes one task message and SETs the job
records (core/jobs.py) and the idempotency claims of the jobs that have a key
(app/services/idempotency.py), or writes nothing when one of those keys is already claimed;
and on the worker one Celery delivery and one scikit-learn call. A request returns only after
its group is in Redis, so an accepted job is never only in this process's memory.

Logging follows the same grouping: one INFO line per message with every job_id and request_id
bound (the worker logs the same lists), per-job lines only at DEBUG.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import orjson
import redis.asyncio as aioredis
from loguru import logger

from app.errors import NotReplicated
from app.metrics import GatewayMetrics
from app.services.admission import Admission
from app.services.idempotency import AlreadyClaimed, Claim
from core.jobs import PREDICT, job_key, pending_predict
from core.messages import ALONE, PREDICT_QUEUE, PREDICT_TASK, celery_message
from core.settings import ModelSettings
from core.tracing import TRACEPARENT

if TYPE_CHECKING:
    from core.otel import Tracer

# One command writes the group's idempotency claims, job records and task message, atomically.
# The gateway's CPU per group, this script against a MULTI of the same N+1 commands (redis-py
# asyncio, measured on the 2-core machine): 1 job 143 vs 231 µs, 16 jobs 182 vs 548 µs, 64 jobs
# 275 vs 1,539 µs. Redis does not roll a script back, so the one write that can fail comes
# first: the LPUSH (out of memory is checked at a script's first write; no other command runs
# before the SETs, so no worker sees the message before its records).
# A claim is written with its job or not at all: a crash or a timeout cannot leave a key
# without its job.
# KEYS: the queue, n idempotency keys, the job keys. ARGV: job TTL, message, n, idempotency
# window, n claims ("<job id> <body digest>"), the job records. Returns the queue length, or
# {index, held claim, ...} for claims already taken, having written nothing.
ENQUEUE = """
local n = tonumber(ARGV[3])
local taken = {}
for i = 1, n do
  local held = redis.call('GET', KEYS[1 + i])
  if held then
    taken[#taken + 1] = i
    taken[#taken + 1] = held
  end
end
if #taken > 0 then return taken end
local depth = redis.call('LPUSH', KEYS[1], ARGV[2])
for i = 1, n do
  redis.call('SET', KEYS[1 + i], ARGV[4 + i], 'EX', ARGV[4])
end
for i = n + 2, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 3], 'EX', ARGV[1])
end
return depth
"""
BACKLOG = 1  # predict messages queued beyond this mean the workers are behind
SERVING_FORGOTTEN = 5.0  # seconds after which an unanswered message no longer holds a worker


class _Group:
    """The open group of one model (and pinned version): its jobs until it is flushed."""

    __slots__ = (
        "behind", "claims", "closes_at", "done", "jobs", "key", "queue", "rows", "seen", "timer",
        "waiting",
    )  # fmt: skip

    def __init__(
        self, key: tuple, queue: str, done: asyncio.Future, behind: bool, closes_at: float
    ):
        self.key = key
        self.queue = queue
        self.jobs: list[dict] = []
        self.waiting: list[str] = []  # the jobs whose requests wait for their answers
        self.claims: dict[str, Claim] = {}  # job id -> its claim
        self.rows = 0
        self.done = done
        self.timer: asyncio.Handle | None = None
        self.behind = behind  # started while workers were behind
        self.closes_at = closes_at  # loop time after which a lingering group closes regardless
        self.seen = 0  # jobs at the last look: did the last loop turn add one?


class JobSubmitter:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        admission: Admission,
        max_rows: int,
        max_wait_ms: float,
        ttl: int,
        backlog_wait_ms: float | None = None,
        idempotency_window: int = 600,
        metrics: GatewayMetrics | None = None,
        models: Mapping[str, ModelSettings] | None = None,
        replica_ack_ms: int = 0,
        tracer: Tracer | None = None,
        capacity: Callable[[str], int | None] | None = None,
        arrivals: Callable[[], int] | None = None,
    ):
        self.client = client
        self.replica_ack_ms = replica_ack_ms
        self.metrics = metrics if metrics is not None else GatewayMetrics()
        self.max_rows = max_rows
        self.max_wait = max_wait_ms / 1000
        self.backlog_wait = max(self.max_wait, (backlog_wait_ms or max_wait_ms) / 1000)
        self.ttl = ttl
        self.idempotency_window = idempotency_window
        self.admission = admission  # its queue_depth: messages waiting, as of the last look
        self.models = models or {}  # each model's queue and group size; others: the defaults
        self._open: dict[tuple, _Group] = {}  # (model, pinned version) -> its open group
        self._writes: set[asyncio.Task] = set()
        self._enqueue = client.register_script(ENQUEUE)
        self.tracer = tracer  # None: tracing is off (core/tracing.py)
        self.requests = 0  # predict requests in progress (:meth:`request`)
        self._grouped = 0  # jobs in open groups
        self._closing: asyncio.Handle | None = None  # :meth:`_close_joined`, scheduled
        # POST requests the HTTP server has read so far (app/edge.py), and that count when
        # the closing was last scheduled: requests read since then may still join.
        self.arrivals = arrivals or (lambda: 0)
        self._arrived = 0
        # Worker processes consuming a queue (None: not known yet), and this gateway's
        # messages each queue's workers are answering (:meth:`answered`).
        self.capacity = capacity or (lambda _queue: None)
        self._serving: dict[str, dict[int, tuple[float, list[str]]]] = {}
        self._message_of: dict[str, tuple[str, int]] = {}  # waiting job -> (queue, message)
        self._held: dict[str, list[_Group]] = {}  # per queue: groups waiting for a free worker
        self._numbers = itertools.count()

    @contextlib.contextmanager
    def request(self):
        """Count a predict request from its job's submission to its answer (or its 202):
        once every request counted is in an open group, the groups close at once."""
        self.requests += 1
        try:
            yield
        finally:
            self.requests -= 1

    async def submit(self, job: dict, claim: Claim | None = None, waits: bool = False) -> None:
        """Queue one job; return once its message is in Redis (raise if Redis refused it).

        Jobs of one model (and pinned version) share messages; each model has its own group.
        With a ``claim`` the job is queued only if its idempotency key is free; otherwise
        nothing is queued for it and AlreadyClaimed says which job holds the key. ``waits``:
        its request waits for the answer (which tells when a worker is free again).
        """
        key = (job.get("model"), job.get("version"))
        group = self._open.get(key)
        if group is None:
            loop = asyncio.get_running_loop()
            queue = self._queue_of(key[0])
            # Messages already waiting mean the workers are behind: a job would wait in the
            # queue anyway, so the group may stay open longer (up to backlog_wait) to make
            # fewer, larger messages, which are cheaper to run. One waiting message is
            # normal: it waits for the one each worker is running.
            group = _Group(
                key,
                queue,
                loop.create_future(),
                self.admission.queue_depth > BACKLOG,
                loop.time() + self.backlog_wait,
            )
            if self._all_busy(queue, loop.time()):
                # Every worker process of the queue is answering one of this gateway's
                # messages: a message sent now would wait in the queue for one of them. The
                # group gathers what comes meanwhile and goes when one answers (up to
                # backlog_wait): fewer, larger messages, and no job starts later for it.
                group.timer = loop.call_later(self.backlog_wait, self._flush, group)
                self._held.setdefault(queue, []).append(group)
            else:
                group.timer = loop.call_later(self.max_wait, self._on_timer, group)
            self._open[key] = group
        done = group.done
        group.jobs.append(job)
        self._grouped += 1
        if self._everyone_joined() and self._closing is None:
            self._arrived = self.arrivals()
            self._closing = asyncio.get_running_loop().call_later(0, self._close_joined)
        if waits:
            group.waiting.append(job["job_id"])
        if claim is not None:
            group.claims[job["job_id"]] = claim
        group.rows += len(job["rows"])
        model = self.models.get(key[0])
        if group.rows >= (model.max_batch_size if model is not None else self.max_rows):
            self._flush(group)
        taken = await asyncio.shield(done)
        if job["job_id"] in taken:
            raise AlreadyClaimed(taken[job["job_id"]])

    def _everyone_joined(self) -> bool:
        return 0 < self.requests <= self._grouped

    def _close_joined(self) -> None:
        """Every predict request in progress in this gateway is in an open group: none can
        join one before an answer goes out, so the window would only delay them (a single
        client sending one request at a time; async clients whose previous requests all got
        their 202). The groups close after the turn of the loop that found it, which still
        lets in the requests read from the sockets with them; held groups stay held.

        While each turn reads more POST requests, the groups linger a turn more: a request's
        handler starts on the turn after the one that read it, so the clients answered by the
        last message, sending their next requests, join this one (async submits at 16
        connections: 11.2 -> 12.7 jobs per message, CPU per job -6 %). Each group's own
        max_wait still bounds the wait, and one idle client never lingers."""
        self._closing = None
        if not self._everyone_joined():  # another request came meanwhile: it may join
            return
        arrived = self.arrivals()
        if arrived != self._arrived:
            self._arrived = arrived
            self._closing = asyncio.get_running_loop().call_soon(self._close_joined)
            return
        for group in list(self._open.values()):
            if group not in self._held.get(group.queue, ()):
                self._flush(group)

    def _on_timer(self, group: _Group) -> None:
        """Close the group after max_wait; when behind, once a turn of the loop brings no job.

        Holding a group a fixed backlog_wait made every client that sends one request at a
        time wait that long even after all of them had joined (async submits at 16
        connections: about 4,200 req/s). Lingering only while each turn of the event loop
        (each read of the sockets) adds a job still gathers all that a busy stream sends,
        up to backlog_wait, and closes as soon as the stream pauses.
        """
        if not group.behind:
            self._flush(group)
            return
        loop = asyncio.get_running_loop()
        if len(group.jobs) != group.seen and loop.time() < group.closes_at:
            group.seen = len(group.jobs)
            group.timer = loop.call_soon(self._on_timer, group)  # after the next socket poll
            return
        self._flush(group)

    def _queue_of(self, name: str | None) -> str:
        model = self.models.get(name)
        return model.queue if model is not None else PREDICT_QUEUE

    def _all_busy(self, queue: str, now: float) -> bool:
        """Does each worker process of ``queue`` answer a message of this gateway? Messages
        not answered within SERVING_FORGOTTEN seconds are forgotten (their answers may have
        come while the listener was away)."""
        slots, serving = self.capacity(queue), self._serving.get(queue)
        if not slots or not serving:
            return False
        for number in [n for n, (sent, _) in serving.items() if now - sent > SERVING_FORGOTTEN]:
            for job_id in serving.pop(number)[1]:
                self._message_of.pop(job_id, None)
        return len(serving) >= slots

    def answered(self, job_ids: list) -> None:
        """The listener's hook, for each results message: the worker that answered one of this
        gateway's messages is free, so the oldest group held for it goes."""
        for job_id in job_ids:
            found = self._message_of.pop(job_id, None) if isinstance(job_id, str) else None
            if found is None:
                continue
            queue, number = found
            _, jobs = self._serving[queue].pop(number, (0.0, ()))
            for other in jobs:
                self._message_of.pop(other, None)
            held = self._held.get(queue)
            if held:
                self._flush(held[0])
            return

    def _flush(self, group: _Group) -> None:
        if group.timer is not None:
            group.timer.cancel()
            group.timer = None
        if self._open.get(group.key) is group:
            del self._open[group.key]
            self._grouped -= len(group.jobs)
        held = self._held.get(group.queue)
        if held and group in held:
            held.remove(group)
        if not group.jobs or group.done.done():
            return
        alone = self._alone(group)
        if group.waiting:  # its answers will say when a worker is free again
            number = next(self._numbers)
            now = asyncio.get_running_loop().time()
            self._serving.setdefault(group.queue, {})[number] = (now, group.waiting)
            for job_id in group.waiting:
                self._message_of[job_id] = (group.queue, number)
        task = asyncio.get_running_loop().create_task(
            self._write(group.jobs, group.claims, group.done, {ALONE: True} if alone else None)
        )
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    def _alone(self, group: _Group) -> bool:
        """Is ``group`` one sync job, of the only predict request in progress, while no other
        message of ours is unanswered: a single idle client? Then a worker whose pool is idle
        runs it in its main process, one process hop sooner (workers/pool.py). Under load
        messages go to the pool processes, which run side by side. Async jobs never count:
        their answers are not followed, so a busy stream of them could look idle."""
        return (
            len(group.jobs) == 1
            and len(group.waiting) == 1
            and self.requests == 1
            and not any(self._serving.values())
        )

    async def _write(
        self, group: list[dict], claims: dict[str, Claim], done, headers: dict | None = None
    ) -> None:
        """Write the group; ``done`` gets {job id: held claim} of the jobs not queued."""
        taken: dict[str, str] = {}
        try:
            pending, duplicates = _first_claims(group, claims)
            while pending:  # each turn queues the jobs or drops those whose key is taken
                held = await self._enqueue_group(pending, claims, headers)
                if not held:
                    break
                taken.update(held)
                pending = [job for job in pending if job["job_id"] not in held]
            # The same key twice in one group: the later jobs replay the first one's job.
            for job_id, first in duplicates.items():
                taken[job_id] = taken.get(first, claims[first].value)
        except BaseException as exc:
            if not done.done():
                done.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            _bound(group).warning("predict jobs not queued: {!r}", exc)
            return
        if not done.done():
            done.set_result(taken)

    async def _enqueue_group(
        self, group: list[dict], claims: dict[str, Claim], headers: dict | None = None
    ) -> dict[str, str]:
        """One script call: {} once queued, or {job id: held claim} for the jobs whose keys
        were already claimed (then nothing was written)."""
        name = group[0].get("model")
        queue = self._queue_of(name)
        if self.tracer is None:
            return await self._enqueue_message(group, claims, name, queue, headers)
        # The message's span: a child of its first job's request, linked to the others'.
        with self.tracer.span(
            f"publish {queue}",
            kind="producer",
            parent=group[0].get(TRACEPARENT),
            links=(job.get(TRACEPARENT) for job in group[1:]),
            attributes={
                "messaging.system": "celery",
                "messaging.destination.name": queue,
                "messaging.batch.message_count": len(group),
                "mlops.model": str(name),
            },
        ):
            traced = {**(headers or {}), TRACEPARENT: self.tracer.traceparent()}
            return await self._enqueue_message(group, claims, name, queue, traced)

    async def _enqueue_message(
        self,
        group: list[dict],
        claims: dict[str, Claim],
        name: str | None,
        queue: str,
        headers: dict | None = None,
    ) -> dict[str, str]:
        own_queue = queue if queue != PREDICT_QUEUE else None
        # Results go to each job's own key (workers/batches.py), not to Celery's result backend.
        task_id, payload = celery_message(
            PREDICT_TASK, [group], queue=queue, ignore_result=True, model=name, headers=headers
        )
        now = time.time()
        claimed = [job["job_id"] for job in group if job["job_id"] in claims] if claims else []
        mine = [claims[job_id] for job_id in claimed]
        keys = [queue, *(c.key for c in mine)]
        records = []
        for job in group:
            keys.append(job_key(job["job_id"]))
            records.append(orjson.dumps(pending_predict(job, task_id, now, own_queue)))
        args = [self.ttl, payload, len(mine), self.idempotency_window, *(c.value for c in mine)]
        reply = await self._run_enqueue(keys, [*args, *records])
        if isinstance(reply, list):
            pairs = zip(reply[::2], reply[1::2], strict=True)
            return {claimed[int(i) - 1]: held.decode() for i, held in pairs}
        if queue == PREDICT_QUEUE:  # other queues: the watcher's next reading sums them
            self.admission.queue_depth = int(reply) - 1  # messages ahead of this one
        self.metrics.submitted(PREDICT, name).inc(len(group))
        _bound(group).info(
            "queued {} predict job(s) as message {} (queue depth {})",
            len(group),
            task_id,
            self.admission.queue_depth,
        )
        return {}

    async def _run_enqueue(self, keys: list, args: list):
        """The script's reply; with ``replica_ack_ms``, once a replica has its writes too.

        WAIT counts the writes of its own connection, so it follows the script in one
        pipeline. Without a replica's ack in time the job is on the primary only: it runs
        unless the primary dies first, so the request answers 503 outcome_unknown.
        """
        if not self.replica_ack_ms:
            return await self._enqueue(keys=keys, args=args)
        async with self.client.pipeline(transaction=False) as pipe:
            await self._enqueue(keys=keys, args=args, client=pipe)
            pipe.wait(1, self.replica_ack_ms)
            reply, acked = await pipe.execute()
        if not isinstance(reply, list) and acked < 1:
            raise NotReplicated(f"no replica acknowledged the job within {self.replica_ack_ms} ms")
        return reply

    async def drain(self) -> None:
        """Flush what is buffered and wait for in-flight writes (shutdown)."""
        for group in list(self._open.values()):
            self._flush(group)
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)


def _first_claims(group: list[dict], claims: dict[str, Claim]) -> tuple[list[dict], dict]:
    """The group without jobs whose key an earlier job of it claims, and {later: earlier}."""
    first: dict[str, str] = {}  # idempotency key -> the job id that claims it first
    kept, duplicates = [], {}
    for job in group:
        claim = claims.get(job["job_id"])
        if claim is not None and claim.key in first:
            duplicates[job["job_id"]] = first[claim.key]
            continue
        if claim is not None:
            first[claim.key] = job["job_id"]
        kept.append(job)
    return kept, duplicates


def _bound(group: list[dict]):
    """A logger carrying every job's ids, comma-joined like the worker's line for the message."""
    return logger.bind(
        job_id=",".join(job["job_id"] for job in group),
        request_id=",".join(str(job.get("request_id")) for job in group),
    )

"""Single-flight retraining: one training run at a time, whoever asks (API, beat, worker, CLI).

One Redis key per model, :func:`lock_key` (two models may train at once, one model never
twice), whose value says who holds it:

- ``<job id>``: a run is QUEUED. ``POST /retrain`` and beat claim the key when they queue a
  retrain job, for as long as the job may wait (its record's TTL): a second request while it
  waits joins that job instead of queueing another, so retrains that no worker takes yet
  cannot pile up.
- ``<job id>|<runner>``: the run is RUNNING in one process. The worker that takes the job (or
  the CLI) turns the claim into a lease of ``training.lock_lease_seconds``, renewed while it
  runs, so a run whose process dies frees the key within one lease.

redis-py's ``Lock`` has one token per holder: it cannot hand a claim from the process that
queued a job to the one that runs it, nor tell a queued run from a running one, and a
redelivered copy of a run still alive elsewhere would run it a second time. Each transition
here is one Lua script, so it is atomic.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import orjson
import redis
import redis.asyncio as aioredis
from loguru import logger

from core.jobs import PENDING, job_key, train_record
from core.messages import RETRAIN_TASK, TRAIN_QUEUE, celery_message, new_id
from core.tracing import TRACEPARENT


def lock_key(model: str) -> str:
    return f"mlops:lock:retrain:{model}"


RUNNER_SEPARATOR = "|"

# Why a retrain runs, kept in the version it makes: POST /retrain and the CLI, beat, drift
# monitoring (workers/monitoring.py).
MANUAL, SCHEDULE, DRIFT = "manual", "schedule", "drift"


def trigger_kwargs(trigger: str, detail: dict | None = None) -> dict:
    """The retrain task's keyword arguments that carry its trigger."""
    return (
        {"trigger": trigger} if detail is None else {"trigger": trigger, "trigger_detail": detail}
    )


# KEYS: lock, the job's record, the train queue. ARGV: job id, record, task message, TTL in
# seconds. Claims the lock, writes the record and queues the message at once (a crash cannot
# leave a claim without its job), or returns who holds the lock. The write that can fail
# comes first (scripts are not rolled back): see ENQUEUE in app/services/submitter.py.
REQUEST = """
local held = redis.call('GET', KEYS[1])
if held then return held end
redis.call('LPUSH', KEYS[3], ARGV[3])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[4])
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[4])
return false
"""
# KEYS[1] lock; ARGV[1] job id, ARGV[2] running value, ARGV[3] lease ms. Free or queued for
# this job: take it, return nil. Otherwise return who holds it.
START = """
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then return held end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return false
"""
# KEYS[1] lock; ARGV[1] our value, ARGV[2] lease ms. 1 while we hold it, else 0.
RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""
RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""


@dataclass(frozen=True)
class Holder:
    """Who holds the lock: a job id, and whether its run has started."""

    job_id: str
    running: bool

    @classmethod
    def parse(cls, value: bytes | str | None) -> Holder | None:
        if value is None:
            return None
        text = value.decode() if isinstance(value, bytes) else value
        job_id, separator, _runner = text.partition(RUNNER_SEPARATOR)
        return cls(job_id, bool(separator))


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


TRIGGERS = ("manual", "schedule", "labels", "drift")
"""Why a retrain runs, recorded in the version it makes: asked for (API, CLI), beat's cron,
enough new feedback labels (core/feedback.py), drift past its threshold."""


def _request(
    model: str,
    requested_by: str,
    owner: str | None,
    ttl: int,
    traceparent: str | None = None,
    trigger: str = MANUAL,
    trigger_detail: dict | None = None,
    force: bool = False,
) -> tuple[str, tuple]:
    """A new retrain job's id and the arguments of :data:`REQUEST` that queue it; its message
    carries ``traceparent`` (core/tracing.py) when given, the run's trigger and ``force``."""
    if trigger not in TRIGGERS:
        raise ValueError(f"unknown retrain trigger {trigger!r}; one of {TRIGGERS}")
    job_id = new_id()
    record = train_record(
        job_id,
        PENDING,
        model=model,
        requested_by=requested_by,
        owner=owner,
        trigger=trigger,
        submitted_at=time.time(),
    )
    # The message expires with the job's record and claim: Celery drops it unrun after that.
    _, payload = celery_message(
        RETRAIN_TASK,
        [model],
        kwargs={**trigger_kwargs(trigger, trigger_detail), "force": force},
        queue=TRAIN_QUEUE,
        task_id=job_id,
        expires_in=ttl,
        model=model,
        headers={TRACEPARENT: traceparent} if traceparent else None,
    )
    keys = (lock_key(model), job_key(job_id), TRAIN_QUEUE)
    return job_id, (REQUEST, len(keys), *keys, job_id, orjson.dumps(record), payload, int(ttl))


def request_retrain(
    client: redis.Redis,
    model: str,
    requested_by: str,
    ttl: int,
    owner: str | None = None,
    traceparent: str | None = None,
    trigger: str = MANUAL,
    trigger_detail: dict | None = None,
    force: bool = False,
) -> tuple[str, bool]:
    """Queue a retrain of ``model``, or join the one queued or running: ``(job id, joined)``.

    ``owner``: the API key that may read the job besides ``admin`` keys (None: admins only).
    A request that joins another keeps that one's trigger. ``trigger``: one of
    :data:`TRIGGERS`; ``force``: train even with nothing new to learn."""
    job_id, args = _request(
        model, requested_by, owner, ttl, traceparent, trigger, trigger_detail, force
    )
    held = Holder.parse(client.eval(*args))
    return (job_id, False) if held is None else (held.job_id, True)


async def request_retrain_async(
    client: aioredis.Redis,
    model: str,
    requested_by: str,
    ttl: int,
    owner: str | None = None,
    traceparent: str | None = None,
    trigger: str = MANUAL,
    force: bool = False,
) -> tuple[str, bool]:
    """:func:`request_retrain` for the gateway's asyncio client."""
    job_id, args = _request(model, requested_by, owner, ttl, traceparent, trigger, None, force)
    held = Holder.parse(await client.eval(*args))
    return (job_id, False) if held is None else (held.job_id, True)


def holder(client: redis.Redis, model: str) -> Holder | None:
    return Holder.parse(client.get(lock_key(model)))


class RunLease:
    """The running side: take the lock for one run, renew it while it runs, release it.

    ``lost`` is set once the lease could not be renewed (another run took the key, or Redis was
    unreachable for a whole lease): such a run must not promote what it trained.
    """

    def __init__(self, client: redis.Redis, model: str, job_id: str, lease_seconds: float):
        self.client = client
        self.key = lock_key(model)
        self.job_id = job_id
        runner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.value = f"{job_id}{RUNNER_SEPARATOR}{runner}"
        self.lease_seconds = float(lease_seconds)
        self.lost = threading.Event()

    def start(self) -> Holder | None:
        """Take the lock (free, or queued for this job); None, or who holds it instead."""
        reply = self.client.eval(
            START, 1, self.key, self.job_id, self.value, _ms(self.lease_seconds)
        )
        return Holder.parse(reply)

    def renew(self) -> bool:
        return bool(self.client.eval(RENEW, 1, self.key, self.value, _ms(self.lease_seconds)))

    def release(self) -> bool:
        return bool(self.client.eval(RELEASE, 1, self.key, self.value))

    @property
    def held(self) -> bool:
        return not self.lost.is_set()

    @contextlib.contextmanager
    def renewing(self) -> Iterator[RunLease]:
        """Renew every third of the lease until the block ends, then release."""
        stop = threading.Event()

        def loop() -> None:
            renewed_at = time.monotonic()
            while not stop.wait(self.lease_seconds / 3):
                try:
                    if self.renew():
                        renewed_at = time.monotonic()
                        continue
                    reason = "another run holds the lock now"
                except redis.RedisError as exc:
                    if time.monotonic() - renewed_at < self.lease_seconds:
                        continue
                    reason = f"Redis unreachable for a whole lease ({exc})"
                logger.error(
                    "training job {} lost its single-flight lease: {}", self.job_id, reason
                )
                self.lost.set()
                return

        thread = threading.Thread(target=loop, name="lease-renewal", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join(timeout=5)
            with contextlib.suppress(redis.RedisError):
                self.release()

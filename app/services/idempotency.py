"""Idempotency: a retried predict request gets the job it queued the first time, never a second.

A request with an ``Idempotency-Key`` (or, with ``api.idempotency_from_request_id``, its
``request_id``) makes a :class:`Claim` for the job it is about to queue: a Redis key scoped to
the caller's API key (two clients may use the same key), whose value names the job and a
digest of the body. The submitter writes the claim in the same Lua script as the job
(app/services/submitter.py), so a key never names a job that was not queued, and a claim
already taken there raises :class:`AlreadyClaimed`. A request whose key is held is answered
with that job (:func:`replay`), or 409 when it came with another body.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson
import redis.asyncio as aioredis

from app.errors import IdempotencyConflict
from app.services.dataplane import Outcome, await_result
from app.services.job_status import job_status
from core.jobs import is_finished

if TYPE_CHECKING:
    from app.state import Gateway

MAX_KEY = 200  # characters of an Idempotency-Key header
REPLAYED = {"Idempotent-Replayed": "true"}


def idempotency_key(key: str) -> str:
    """Redis key of a claim; expires after ``api.idempotency_window_seconds``."""
    return f"mlops:idem:{key}"


@dataclass(frozen=True)
class Claim:
    """An idempotency key to write with a job: its Redis key and value ("<job id> <digest>")."""

    key: str
    value: str

    @property
    def digest(self) -> str:
        return self.value.partition(" ")[2]


class AlreadyClaimed(Exception):
    """Another job holds this idempotency key; ``held`` is its claim's value."""

    def __init__(self, held: str):
        super().__init__(held)
        self.held = held


def new_claim(owner: str | None, key: str, job_id: str, body: bytes, target: str = "") -> Claim:
    """The claim of ``key`` for ``job_id``, a job of the API key ``owner`` with this body for
    ``target`` (the model, and version if pinned: the same body for another model is another
    request)."""
    digest = hashlib.sha256(body + target.encode()).hexdigest()[:32]
    return Claim(idempotency_key(f"{owner}:{key}"), f"{job_id} {digest}")


async def held_value(client: aioredis.Redis, claim: Claim) -> str | None:
    """The claim already written on ``claim``'s key (this request is a retry), or None."""
    value = await client.get(claim.key)
    return value.decode() if value is not None else None


async def replay(
    gateway: Gateway, held: str, claim: Claim, request_id: str | None, wait: float
) -> Outcome:
    """The outcome of a request whose idempotency key already names a job: that job's
    (``replayed``), or 409 if the key came with another body. A claim is written with its
    job, so the job exists."""
    job_id, _, digest = held.partition(" ")
    if digest != claim.digest:
        raise IdempotencyConflict(
            "this Idempotency-Key was already used with a different body; use a new key"
        )
    future = gateway.listener.register(job_id) if wait else None
    try:
        record = await job_status(gateway.redis, job_id, gateway.settings.api.jobs_ttl_seconds)
    except BaseException:
        gateway.listener.discard(job_id)
        raise
    if is_finished(record):
        gateway.listener.discard(job_id)
        return Outcome(job_id, request_id, orjson.dumps(record), replayed=True)
    result = None
    if future is not None:
        result = await await_result(gateway.submitter, gateway.listener, job_id, future, wait)
    return Outcome(job_id, request_id, result, replayed=True)

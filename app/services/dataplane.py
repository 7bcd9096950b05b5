"""Turn rows into an accepted job, then await its answer: plain functions any route can use."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import orjson

from app.services.job_status import FINISHED
from app.services.listener import ResultListener
from app.services.submitter import Claim, JobSubmitter
from core.messages import job_key, new_id


@dataclass
class Outcome:
    job_id: str
    request_id: str | None
    result: bytes | None  # the result's JSON; None: not finished in time (answer 202)


async def submit_and_wait(
    submitter: JobSubmitter,
    listener: ResultListener,
    *,
    rows: list[list[float]],
    features: tuple[str, ...],
    request_id: str | None,
    wait: float,
    expires_in: float,
    owner: str | None = None,
    job_id: str | None = None,
    claim: Claim | None = None,
) -> Outcome:
    """Queue one job (AlreadyClaimed if ``claim``'s key holds another job), then wait."""
    job_id = job_id or new_id()
    job = {
        "job_id": job_id,
        "request_id": request_id,
        "owner": owner,
        "rows": rows,
        "features": list(features),
        "expires_at": time.time() + expires_in,
    }
    future = listener.register(job_id) if wait > 0 else None
    try:
        await submitter.submit(job, claim)
    except BaseException:
        listener.discard(job_id)
        raise
    if future is None:
        return Outcome(job_id, request_id, None)
    return Outcome(
        job_id, request_id, await await_result(submitter, listener, job_id, future, wait)
    )


async def await_result(submitter, listener, job_id: str, future, wait: float) -> bytes | None:
    """The job's result as the worker encoded it (JSON bytes), or None if not done in time."""
    try:
        async with asyncio.timeout(wait):
            return await future
    except TimeoutError:
        listener.discard(job_id)
        # A result published while the listener was reconnecting is still in its record.
        raw = await submitter.client.get(job_key(job_id))
        if raw and orjson.loads(raw).get("status") in FINISHED:
            return raw
        submitter.metrics.sync_wait_timeouts.inc()
        return None

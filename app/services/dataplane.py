"""The data plane of a prediction: turn rows into an accepted job, then await its answer.

Plain functions any route can use (MLServer keeps this hop in ``handlers/dataplane.py``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.services.listener import ResultListener
from core.jobs import decode_record, is_finished, job_key
from core.messages import new_id
from core.tracing import TRACEPARENT

if TYPE_CHECKING:  # types only: the submitter imports idempotency.py, which imports this module
    from app.services.idempotency import Claim
    from app.services.submitter import JobSubmitter


@dataclass
class Outcome:
    job_id: str
    request_id: str | None
    result: bytes | None  # the result's JSON; None: not finished in time (answer 202)
    replayed: bool = False  # the job of an earlier request with the same idempotency key


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
    model: str | None = None,
    version: int | None = None,
) -> Outcome:
    """Queue one job of ``model`` (its production version, or ``version`` pinned), then
    wait; AlreadyClaimed if ``claim``'s key holds another job."""
    job_id = job_id or new_id()
    job = {
        "job_id": job_id,
        "request_id": request_id,
        "owner": owner,
        "model": model,
        "rows": rows,
        "features": list(features),
        "expires_at": time.time() + expires_in,
    }
    if version is not None:
        job["version"] = version
    tracer = submitter.tracer
    if tracer is not None:  # the request's span: the worker links its prediction to it
        job[TRACEPARENT] = tracer.traceparent()
    future = listener.register(job_id) if wait > 0 else None
    with submitter.request():
        try:
            await submitter.submit(job, claim, waits=future is not None)
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
    raw = await _await_result(submitter, listener, job_id, future, wait)
    if submitter.tracer is not None:  # an event of the request's span: cheaper than a span
        submitter.tracer.event(
            "result delivered" if raw is not None else "result not ready",
            {"mlops.job_id": job_id},
        )
    return raw


async def _await_result(submitter, listener, job_id: str, future, wait: float) -> bytes | None:
    try:
        async with asyncio.timeout(wait):
            return await future
    except TimeoutError:
        listener.discard(job_id)
        # A result published while the listener was reconnecting is still in its record.
        raw = await submitter.client.get(job_key(job_id))
        if is_finished(decode_record(raw)):
            return raw
        submitter.metrics.sync_wait_timeouts.inc()
        return None

"""The CLI's side of single-flight training: the same Redis lease lock as beat and the API.

``python -m training train`` takes ``mlops:lock:retrain`` when Redis answers, so it never
trains at the same moment as a retrain job; it also records itself as a ``train`` job, so a
``POST /retrain`` that finds the CLI running points at a job that ``GET /jobs/{id}`` knows.
When Redis is unreachable the CLI trains anyway (a laptop without Redis) and says so.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import orjson
import redis
from loguru import logger

from core.errors import MLOpsError
from core.lock import LeaseLock
from core.messages import RETRAIN_LOCK_KEY, job_key, new_id
from core.redis import sync_client


class TrainingRunning(MLOpsError):
    status_code = 409
    reason = "training_running"


def _record(client: redis.Redis, job_id: str, ttl: int, status: str, **fields) -> None:
    record = {"job_id": job_id, "kind": "train", "status": status, "requested_by": "cli"}
    with contextlib.suppress(redis.RedisError):
        client.set(job_key(job_id), orjson.dumps({**record, **fields}), ex=ttl)


@contextlib.contextmanager
def single_flight(settings) -> Iterator[dict]:
    """Hold the retrain lock for the block; the yielded dict takes the run's result."""
    outcome: dict = {}
    job_id = f"cli-{new_id()}"
    ttl = int(settings.api.jobs_ttl_seconds)
    client = sync_client(str(settings.redis_url))
    lock = LeaseLock(client, RETRAIN_LOCK_KEY, job_id, settings.training.lock_lease_seconds)
    try:
        acquired = lock.acquire()
    except (redis.RedisError, OSError) as exc:
        logger.warning("Redis unreachable ({}): training without the single-flight lock", exc)
        acquired = None
    if acquired is None:
        client.close()
        yield outcome
        return
    if not acquired:
        holder = lock.holder() or "(just finished)"
        client.close()
        raise TrainingRunning(f"training job {holder} is already running")
    _record(client, job_id, ttl, "STARTED", submitted_at=time.time())
    try:
        with lock.renewing():
            yield outcome
    except MLOpsError as exc:
        _record(client, job_id, ttl, "FAILURE", error={"reason": exc.reason, "message": str(exc)})
        raise
    except BaseException as exc:
        _record(client, job_id, ttl, "FAILURE", error={"reason": "failed", "message": str(exc)})
        raise
    else:
        _record(client, job_id, ttl, "SUCCESS", result=outcome, completed_at=time.time())
    finally:
        client.close()

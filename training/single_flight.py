"""The CLI's side of single-flight training (core/single_flight.py): the lock beat, the API and
the workers use.

``python -m training train`` takes the lock's lease when Redis answers, so it never trains at
the same moment as a retrain job; it also records itself as a ``train`` job, so a
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
from core.jobs import FAILURE, STARTED, SUCCESS, JobStatus, job_error, job_key, train_record
from core.messages import new_id
from core.redis import sync_client
from core.settings import Settings
from core.single_flight import RunLease


class TrainingRunning(MLOpsError):
    status_code = 409
    reason = "training_running"


def _record(client: redis.Redis, job_id: str, ttl: int, status: JobStatus, **fields) -> None:
    record = train_record(job_id, status, requested_by="cli", **fields)
    with contextlib.suppress(redis.RedisError):
        client.set(job_key(job_id), orjson.dumps(record), ex=ttl)


@contextlib.contextmanager
def single_flight(
    settings: Settings, model: str | None = None
) -> Iterator[tuple[dict, RunLease | None]]:
    """Hold the retrain lock for the block; yields ``(result, lease)``: the dict takes the
    run's result, the lease (None without Redis) goes to ``run_training``."""
    outcome: dict = {}
    job_id = f"cli-{new_id()}"
    ttl = int(settings.api.jobs_ttl_seconds)
    client = sync_client(str(settings.redis_url))
    model = model or settings.default_model
    lease = RunLease(client, model, job_id, settings.training.lock_lease_seconds)
    try:
        holder = lease.start()
    except (redis.RedisError, OSError) as exc:
        logger.warning("Redis unreachable ({}): training without the single-flight lock", exc)
        client.close()
        yield outcome, None
        return
    if holder is not None:
        client.close()
        raise TrainingRunning(f"training job {holder.job_id} is already running")
    _record(client, job_id, ttl, STARTED, submitted_at=time.time())
    try:
        with lease.renewing():
            yield outcome, lease
    except MLOpsError as exc:
        _record(client, job_id, ttl, FAILURE, error=job_error(exc.reason, str(exc)))
        raise
    except BaseException as exc:
        _record(client, job_id, ttl, FAILURE, error=job_error("failed", str(exc)))
        raise
    else:
        _record(client, job_id, ttl, SUCCESS, result=outcome, completed_at=time.time())
    finally:
        client.close()

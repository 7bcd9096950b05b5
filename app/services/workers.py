"""Worker processes as their heartbeats report them (queues, served model version), and the
readiness of the service they make (`GET /ready`, `GET /v2/health/ready`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson
import redis.asyncio as aioredis
import redis.exceptions

from core.messages import PREDICT_QUEUE, TRAIN_QUEUE, WORKERS_KEY

if TYPE_CHECKING:  # types only: app/state.py imports this module
    from app.state import Gateway

STALE_AFTER = 5.0  # seconds without a heartbeat: the process is gone
FORGET_AFTER = 300.0
QUEUES = (PREDICT_QUEUE, TRAIN_QUEUE)


async def live_workers(client: aioredis.Redis, heartbeat_seconds: float) -> list[dict]:
    now = time.time()
    fresh_within = max(STALE_AFTER, 3 * heartbeat_seconds)
    live, dead = [], []
    for field_name, raw in (await client.hgetall(WORKERS_KEY)).items():
        try:
            beat = orjson.loads(raw)
        except orjson.JSONDecodeError:
            dead.append(field_name)
            continue
        age = now - float(beat.get("ts", 0))
        if age <= fresh_within:
            live.append(beat)
        elif age > FORGET_AFTER:
            dead.append(field_name)
    if dead:
        await client.hdel(WORKERS_KEY, *dead)
    return sorted(live, key=lambda b: b.get("id", ""))


def consumers(workers: list[dict], queues: tuple[str, ...] = QUEUES) -> dict[str, int]:
    """Live worker processes per queue of ``queues`` (by default the service's own)."""
    return {q: sum(q in (w.get("queues") or ()) for w in workers) for q in queues}


def unserved(workers: list[dict], queues: tuple[str, ...] = QUEUES) -> list[str]:
    """A sentence for each of ``queues`` that no live worker consumes."""
    counts = consumers(workers, queues)
    return [
        f"no live worker consumes the {queue!r} queue: its jobs wait until one starts "
        f"(`celery -A workers worker` consumes every queue)"
        for queue in queues
        if counts[queue] == 0
    ]


@dataclass
class WorkerView:
    """The gateway's latest reading of the heartbeats (refreshed every second by its watcher),
    so that GET /jobs/{id} can say a job waits for a queue nobody consumes without a Redis
    call of its own."""

    workers: list[dict] = field(default_factory=list)
    known: bool = False  # False until the first reading

    async def refresh(self, client: aioredis.Redis, heartbeat_seconds: float) -> None:
        self.workers = await live_workers(client, heartbeat_seconds)
        self.known = True

    def consumers(self, queue: str) -> int | None:
        return consumers(self.workers, (queue,))[queue] if self.known else None


async def readiness(gateway: Gateway) -> tuple[list[str], list[str], list[dict]]:
    """Why the service is not ready (none: ready), warnings, and the live workers: ready when
    Redis and the model store answer, a worker consumes `predict` and the default model has a
    production version."""
    reasons, warnings, workers = [], [], []
    try:
        await gateway.redis.ping()
        workers = await live_workers(gateway.redis, gateway.settings.worker.heartbeat_seconds)
    except (redis.exceptions.RedisError, OSError) as exc:
        reasons.append(f"Redis does not answer: {exc}")
    else:
        reasons += unserved(workers, (PREDICT_QUEUE,))
        # Not a reason to take the gateway out of service (predictions are served), but a
        # retrain would wait: say so.
        warnings += unserved(workers, (TRAIN_QUEUE,))
    if gateway.catalog.store_error is not None:  # the versions already served keep serving
        reasons.append(f"the model store does not answer: {gateway.catalog.store_error}")
    if gateway.catalog.production is None:
        reasons.append("no production model; train one with `python -m training train`")
    return reasons, warnings, workers

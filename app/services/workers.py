"""Worker processes as their heartbeats report them (queues, served model version)."""

from __future__ import annotations

import time

import orjson
import redis.asyncio as aioredis

from core.messages import WORKERS_KEY

STALE_AFTER = 5.0  # seconds without a heartbeat: the process is gone
FORGET_AFTER = 300.0


async def live_workers(client: aioredis.Redis, heartbeat_seconds: float) -> list[dict]:
    now = time.time()
    fresh_within = max(STALE_AFTER, 3 * heartbeat_seconds)
    live, dead = [], []
    for field, raw in (await client.hgetall(WORKERS_KEY)).items():
        try:
            beat = orjson.loads(raw)
        except orjson.JSONDecodeError:
            dead.append(field)
            continue
        age = now - float(beat.get("ts", 0))
        if age <= fresh_within:
            live.append(beat)
        elif age > FORGET_AFTER:
            dead.append(field)
    if dead:
        await client.hdel(WORKERS_KEY, *dead)
    return sorted(live, key=lambda b: b.get("id", ""))

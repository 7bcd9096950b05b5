"""Every Redis client (broker, results, the gateway's own) is built here from one URL.

One place to add Sentinel or TLS options later; ``rediss://`` and ``redis://user:pass@``
URLs already work because redis-py and kombu parse them.
"""

from __future__ import annotations

import redis
import redis.asyncio as aioredis

SOCKET_TIMEOUT = 5.0
CONNECT_TIMEOUT = 2.0
HEALTH_CHECK_INTERVAL = 10


def sync_client(url: str, **overrides) -> redis.Redis:
    options = {
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
        "retry_on_timeout": False,
    } | overrides
    return redis.Redis.from_url(url, **options)


def async_client(url: str, **overrides) -> aioredis.Redis:
    options = {
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
        "max_connections": 64,
    } | overrides
    return aioredis.Redis.from_url(url, **options)


def transport_options() -> dict:
    """Options for kombu's Redis transport and Celery's result backend."""
    return {
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
    }

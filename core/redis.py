"""Every Redis client (broker, results, the gateway's own) is built here from one URL.

One place to add Sentinel or TLS options later; ``rediss://`` and ``redis://user:pass@``
URLs already work because redis-py and kombu parse them.
"""

from __future__ import annotations

import ssl
from urllib.parse import parse_qs, urlsplit

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


_CERT_REQS = {
    "required": ssl.CERT_REQUIRED,
    "optional": ssl.CERT_OPTIONAL,
    "none": ssl.CERT_NONE,
}
_SSL_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")


def ssl_options(url: str) -> dict | None:
    """TLS options for Celery's broker and result backend from a ``rediss://`` URL, else None.

    redis-py verifies the server certificate of a ``rediss://`` URL by default, but kombu
    would connect without verifying it and Celery's result backend refuses the URL unless
    ``ssl_cert_reqs`` is given. Here every client verifies by default; the URL may say
    otherwise (``?ssl_cert_reqs=none``) and name ``ssl_ca_certs``, ``ssl_certfile`` and
    ``ssl_keyfile``.
    """
    parts = urlsplit(url)
    if parts.scheme != "rediss":
        return None
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    wanted = query.get("ssl_cert_reqs", "required").lower().removeprefix("cert_")
    if wanted not in _CERT_REQS:
        raise ValueError(f"ssl_cert_reqs must be one of {sorted(_CERT_REQS)}, got {wanted!r}")
    options: dict = {"ssl_cert_reqs": _CERT_REQS[wanted]}
    options.update({key: query[key] for key in _SSL_FILES if key in query})
    return options

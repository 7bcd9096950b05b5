"""Every Redis client (broker, results, the gateway's own) is built here from one URL.

``redis://`` and ``rediss://`` (TLS) name one server; ``sentinel://`` and ``sentinels://``
(TLS) name Redis Sentinel, which tells every client where the primary is and moves it to a
replica when it dies (:func:`parse_sentinel_url`). Each client below asks the sentinels
again after a lost connection, so a failover needs no restart.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from urllib.parse import parse_qs, quote, unquote, urlsplit

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as aiosentinel
import redis.sentinel
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

SOCKET_TIMEOUT = 5.0
CONNECT_TIMEOUT = 2.0
HEALTH_CHECK_INTERVAL = 10
SENTINEL_PORT = 26379
SENTINEL_SCHEMES = {"sentinel": False, "sentinels": True}  # scheme -> TLS
_CERT_REQS = {
    "required": ssl.CERT_REQUIRED,
    "optional": ssl.CERT_OPTIONAL,
    "none": ssl.CERT_NONE,
}
_SSL_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
_SENTINEL_QUERY = {"sentinel_username", "sentinel_password", "ssl_cert_reqs", *_SSL_FILES}


def _no_maintenance_notifications() -> dict:
    """redis-py's default, ``MaintNotificationsConfig(enabled="auto")`` (Redis Enterprise's
    maintenance events, which Redis itself never sends), makes its pools skip their check
    that a pooled connection is still open (``"auto"`` counts as on; seen in redis-py 8.1.0).
    After Redis restarted, the first command on each stale connection then failed
    ("Connection closed by server.": a 503 from the gateway) instead of reconnecting.
    Turned off, the pools drop such connections when they hand them out."""
    try:
        from redis.maint_notifications import MaintNotificationsConfig
    except ImportError:  # an older redis-py: no such feature, nothing to turn off
        return {}
    return {"maint_notifications_config": MaintNotificationsConfig(enabled=False)}


def _sync_options(overrides: dict) -> dict:
    return {
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
        "retry_on_timeout": False,
        **_no_maintenance_notifications(),
    } | overrides


def _async_options(overrides: dict) -> dict:
    return {
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
        "max_connections": 64,
        **_no_maintenance_notifications(),
    } | overrides


def sync_client(url: str, **overrides) -> redis.Redis:
    options = _sync_options(overrides)
    target = parse_sentinel_url(url)
    if target is None:
        return redis.Redis.from_url(url, **options)
    manager = redis.sentinel.Sentinel(
        target.sentinels, sentinel_kwargs=target.sentinel_kwargs(options)
    )
    return manager.master_for(target.master, **target.node_kwargs(), **options)


def async_client(url: str, **overrides) -> aioredis.Redis:
    options = _async_options(overrides)
    target = parse_sentinel_url(url)
    if target is None:
        return aioredis.Redis.from_url(url, **options)
    manager = aiosentinel.Sentinel(
        target.sentinels, sentinel_kwargs=target.sentinel_kwargs(options, aio=True)
    )
    return manager.master_for(target.master, **target.node_kwargs(), **options)


def transport_options(url: str | None = None) -> dict:
    """Options for kombu's Redis transport and Celery's result backend (for a Sentinel URL,
    the master's name and how to reach the sentinels too)."""
    options = {
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
    }
    target = parse_sentinel_url(url) if url else None
    if target is not None:
        options["master_name"] = target.master
        options["sentinel_kwargs"] = target.sentinel_kwargs(options)
    return options


def celery_url(url: str) -> str:
    """The broker and result backend URL: a Sentinel URL becomes kombu's and Celery's form,
    ``sentinel://user:pass@host1:26379/0;sentinel://user:pass@host2:26379/0``."""
    target = parse_sentinel_url(url)
    if target is None:
        return url
    auth = ""
    if target.username or target.password:
        auth = f"{quote(target.username or '', safe='')}:{quote(target.password or '', safe='')}@"
    return ";".join(
        f"sentinel://{auth}{_netloc_host(host)}:{port}/{target.db}"
        for host, port in target.sentinels
    )


def ssl_options(url: str) -> dict | None:
    """TLS options for Celery's broker and result backend from a ``rediss://`` or
    ``sentinels://`` URL, else None.

    redis-py verifies the server certificate of a ``rediss://`` URL by default, but kombu
    would connect without verifying it and Celery's result backend refuses the URL unless
    ``ssl_cert_reqs`` is given. Here every client verifies by default; the URL may say
    otherwise (``?ssl_cert_reqs=none``) and name ``ssl_ca_certs``, ``ssl_certfile`` and
    ``ssl_keyfile``.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("rediss", "sentinels"):
        return None
    return _tls_options(_query(parts.query))


def _tls_options(query: dict[str, str]) -> dict:
    wanted = query.get("ssl_cert_reqs", "required").lower().removeprefix("cert_")
    if wanted not in _CERT_REQS:
        raise ValueError(f"ssl_cert_reqs must be one of {sorted(_CERT_REQS)}, got {wanted!r}")
    options: dict = {"ssl_cert_reqs": _CERT_REQS[wanted]}
    options.update({key: query[key] for key in _SSL_FILES if key in query})
    return options


def _query(text: str) -> dict[str, str]:
    return {key: values[-1] for key, values in parse_qs(text, keep_blank_values=True).items()}


# -- Sentinel ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SentinelTarget:
    """What a Sentinel URL names:
    ``sentinel[s]://[user:password@]host[:port][,host[:port]...]/master[/db][?options]``.

    ``user:password`` authenticate to the primary and replicas (like ``redis://``);
    ``?sentinel_password=`` (and ``sentinel_username=``) to the sentinels, which often have
    no password. ``sentinels://`` speaks TLS to both, with ``rediss://``'s ``ssl_*`` options.
    """

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    tls: dict | None = None

    def node_kwargs(self) -> dict:
        """Connection options for the primary (and replicas)."""
        kwargs: dict = {"db": self.db, "username": self.username, "password": self.password}
        if self.tls is not None:
            kwargs |= {"ssl": True, **self.tls}
        return kwargs

    def sentinel_kwargs(self, options: dict, *, aio: bool = False) -> dict:
        """Connection options for the sentinels: the timeouts of ``options``, their own
        credentials, TLS like the nodes."""
        kwargs = {k: v for k, v in options.items() if k.startswith("socket_")}
        # No retry per sentinel (redis-py: 3, backing off 1 s and more): the client asks the
        # next sentinel at once, and a dead one must not hold up finding the primary.
        kwargs["retry"] = (AsyncRetry if aio else Retry)(NoBackoff(), 0)
        if self.sentinel_username:
            kwargs["username"] = self.sentinel_username
        if self.sentinel_password:
            kwargs["password"] = self.sentinel_password
        if self.tls is not None:
            kwargs |= {"ssl": True, **self.tls}
        return kwargs


def parse_sentinel_url(url: str) -> SentinelTarget | None:
    """The sentinels and master a ``sentinel://`` URL names; None for another scheme;
    ValueError (never naming the password) when it is malformed."""
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in SENTINEL_SCHEMES:
        return None
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if not at:
        userinfo = ""
    username, _, password = userinfo.partition(":")
    sentinels = tuple(_host_port(item) for item in hosts.split(","))
    path = [unquote(p) for p in parts.path.split("/")[1:]]
    if not path or not path[0]:
        raise ValueError("a sentinel URL names the master after the hosts: .../mymaster[/db]")
    if len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError("a sentinel URL's path is /<master name>[/<db number>]")
    query = _query(parts.query)
    unknown = sorted(set(query) - _SENTINEL_QUERY)
    if unknown:
        raise ValueError(
            f"unknown sentinel URL option(s) {unknown}; known: {sorted(_SENTINEL_QUERY)}"
        )
    tls = _tls_options(query) if SENTINEL_SCHEMES[scheme.lower()] else None
    if tls is None and any(key.startswith("ssl_") for key in query):
        raise ValueError("ssl_* options need the sentinels:// scheme (TLS)")
    return SentinelTarget(
        sentinels=sentinels,
        master=path[0],
        db=int(path[1]) if len(path) == 2 else 0,
        username=unquote(username) or None,
        password=unquote(password) or None,
        sentinel_username=query.get("sentinel_username") or None,
        sentinel_password=query.get("sentinel_password") or None,
        tls=tls,
    )


def _host_port(item: str) -> tuple[str, int]:
    match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^\[\]:/]+)(?::(\d{1,5}))?", item.strip())
    if match is None:
        raise ValueError(f"a sentinel URL lists host[:port] separated by commas, got {item!r}")
    port = int(match.group(2) or SENTINEL_PORT)
    if not 0 < port < 65536:
        raise ValueError(f"sentinel port {port} is out of range")
    return match.group(1).strip("[]"), port


def _netloc_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class SentinelUnreachable(ConnectionError):
    """No sentinel of the URL answered, or none knows its master: the message names the URL
    (password masked)."""


def check_sentinels(url: str, timeout: float = CONNECT_TIMEOUT) -> tuple[str, int] | None:
    """For a Sentinel URL, the primary's address as the sentinels give it (None: not a
    Sentinel URL); SentinelUnreachable when no sentinel answers or none knows the master.

    Every part calls this at start-up, so a wrong or unreachable sentinel list stops it with
    a clear message before it starts anything.
    """
    target = parse_sentinel_url(url)
    if target is None:
        return None
    options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    manager = redis.sentinel.Sentinel(
        target.sentinels, sentinel_kwargs=target.sentinel_kwargs(options)
    )
    try:
        return manager.discover_master(target.master)
    except redis.sentinel.MasterNotFoundError as exc:
        raise SentinelUnreachable(
            f"no sentinel of {mask(url)} gave the address of master {target.master!r} "
            f"({exc}); check that they run and monitor that name"
        ) from None
    finally:
        for client in manager.sentinels:
            client.close()


MIN_VERSION = (7, 0)  # script flags: the workers' answers are written past maxmemory


class RedisTooOld(RuntimeError):
    """The Redis server is older than :data:`MIN_VERSION`."""


def check_version(url: str, timeout: float = CONNECT_TIMEOUT) -> str | None:
    """The server's version (None: it did not answer, or may not say); RedisTooOld when it is
    older than :data:`MIN_VERSION`.

    The worker calls this at start-up: on an older Redis its scripts flagged ``allow-oom``
    (workers/results.py) do not compile, every answer would be refused and every job would
    stay PENDING. A Redis that is not up yet is not waited for here; the worker waits."""
    client = sync_client(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                         retry=Retry(NoBackoff(), 0))  # fmt: skip
    try:
        version = str(client.info("server").get("redis_version", ""))
    except redis.RedisError:
        return None
    finally:
        client.close()
    found = tuple(int(part) for part in re.findall(r"\d+", version)[:2])
    if found < MIN_VERSION:
        needed = ".".join(map(str, MIN_VERSION))
        raise RedisTooOld(f"Redis {version or '(no version)'} is too old: {needed} or newer")
    return version


def mask(url: str) -> str:
    """A Redis or Sentinel URL safe to print: passwords (in the URL and its
    ``sentinel_password``) replaced by ***."""
    url = re.sub(r"^([a-z]+://[^:@/]*):[^@/]*@", r"\1:***@", url, flags=re.IGNORECASE)
    return re.sub(r"([?&](?:sentinel_)?password=)[^&]*", r"\1***", url)

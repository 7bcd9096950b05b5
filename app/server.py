"""``python -m app``: the gateway under uvicorn, configured from settings (``gateway.*``).

A launcher rather than the ``uvicorn`` command: the connection limits live in a protocol
class (app/edge.py), which uvicorn's ``--http`` option cannot name, and the options come from
the settings object like every other part's. Before serving it raises the soft limit on open
files to the hard one and keeps ``gateway.max_connections`` below it.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import resource

import uvicorn
from loguru import logger

from app.edge import EdgeLimits, GatewayProtocol
from core.logging import setup_logging
from core.settings import Settings, get_settings

APP = "app.main:app"
FD_RESERVE = 256
"""Descriptors kept for everything but client connections: the Redis pools (64 + 1), the
listening socket, log and model-store files, with room to spare."""
UNLIMITED_FD_TARGET = 65536  # the soft limit to ask for when the hard limit is unlimited


def raise_fd_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else UNLIMITED_FD_TARGET
    if soft != resource.RLIM_INFINITY and target > soft:
        with contextlib.suppress(ValueError, OSError):  # e.g. macOS caps it below the hard one
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return soft if soft != resource.RLIM_INFINITY else UNLIMITED_FD_TARGET


def connection_cap(configured: int, fd_limit: int) -> int:
    """``gateway.max_connections``, lowered to fit the open-file limit if it must be."""
    fitting = max(1, fd_limit - FD_RESERVE)
    if configured > fitting:
        logger.warning(
            "gateway.max_connections={} does not fit the open-file limit ({}): serving at most "
            "{} connections; raise `ulimit -n` (the hard limit) to allow more",
            configured,
            fd_limit,
            fitting,
        )
    return min(configured, fitting)


def uvicorn_options(settings: Settings, host: str, port: int, fd_limit: int) -> dict:
    gateway = settings.gateway
    limits = EdgeLimits.from_settings(
        settings, max_connections=connection_cap(int(gateway.max_connections), fd_limit)
    )
    options = {
        "host": host,
        "port": port,
        "http": functools.partial(GatewayProtocol, limits=limits),
        "timeout_keep_alive": int(gateway.keep_alive_seconds),
        # No WebSocket routes: an upgrade would hand the connection to a protocol without
        # these limits. Upgrade requests are served as plain HTTP requests.
        "ws": "none",
        "access_log": False,  # the gateway's metrics count every request (core/logging.py)
        "log_config": None,  # core/logging.py configures logging (loguru)
    }
    if gateway.ssl_certfile:
        options["ssl_certfile"] = gateway.ssl_certfile
        options["ssl_keyfile"] = gateway.ssl_keyfile or None
    logger.info(
        "gateway on {}://{}:{}: at most {} connections and {} requests in progress, request "
        "heads within {:g} s, bodies within {:g} s, idle keep-alive {} s (open-file limit {})",
        "https" if gateway.ssl_certfile else "http",
        host,
        port,
        limits.max_connections,
        limits.max_requests,
        limits.header_timeout,
        float(gateway.body_timeout_seconds),
        gateway.keep_alive_seconds,
        fd_limit,
    )
    return options


def main(argv: list[str] | None = None) -> None:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=settings.gateway.host, help="gateway.host")
    parser.add_argument("--port", type=int, default=settings.gateway.port, help="gateway.port")
    args = parser.parse_args(argv)
    setup_logging(settings, "gateway")
    options = uvicorn_options(settings, args.host, args.port, raise_fd_limit())
    uvicorn.run(APP, **options)

"""The gateway launcher (app/server.py), the pieces of app/edge.py that need no server, the
/metrics token and read_body's deadline.

The connection limits themselves are tested on the real server: tests/integration/test_edge.py.
"""

from __future__ import annotations

import asyncio
import resource
import subprocess
import sys

import httpx
import pytest
from loguru import logger
from starlette.requests import Request

from app import edge, server
from app.errors import RequestTimeout
from app.main import create_app
from app.metrics import GatewayMetrics
from app.services.rows import read_body
from core.settings import get_settings, reset_settings
from tests.unit.app.test_metrics import samples, value


@pytest.fixture
def log_lines():
    """Lines logged by the gateway's modules."""
    lines: list = []
    sink = logger.add(
        lambda message: lines.append(message.record),
        level="DEBUG",
        filter=lambda record: record["name"].startswith("app."),
    )
    yield lines
    logger.remove(sink)


def test_the_open_file_limit_is_raised_to_the_hard_limit():
    """In a child whose soft limit is 256: the launcher lifts it to the hard one."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    expected = hard if hard != resource.RLIM_INFINITY else server.UNLIMITED_FD_TARGET

    def lower():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    probe = "from app.server import raise_fd_limit; import resource; " + (
        "print(raise_fd_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, preexec_fn=lower, check=True
    )
    assert result.stdout.split() == [str(expected), str(expected)]


def test_max_connections_is_lowered_to_fit_the_open_file_limit(log_lines):
    assert server.connection_cap(100, 20000) == 100
    assert not log_lines
    assert server.connection_cap(4096, 1024) == 1024 - server.FD_RESERVE
    [line] = log_lines
    assert line["level"].name == "WARNING"
    assert (
        "gateway.max_connections=4096 does not fit the open-file limit (1024)" in (line["message"])
    )


def test_uvicorn_options_come_from_the_gateway_settings(monkeypatch):
    monkeypatch.setenv("MLOPS_GATEWAY__KEEP_ALIVE_SECONDS", "7")
    monkeypatch.setenv("MLOPS_GATEWAY__HEADER_TIMEOUT_SECONDS", "3.5")
    monkeypatch.setenv("MLOPS_GATEWAY__MAX_CONNECTIONS", "300")
    monkeypatch.setenv("MLOPS_GATEWAY__MAX_REQUESTS", "20")
    reset_settings()
    options = server.uvicorn_options(get_settings(), "0.0.0.0", 8123, fd_limit=20000)  # noqa: S104
    protocol = options.pop("http")
    assert protocol.func is edge.GatewayProtocol
    assert protocol.keywords == {
        "limits": edge.EdgeLimits(header_timeout=3.5, max_connections=300, max_requests=20)
    }
    assert options == {
        "host": "0.0.0.0",  # noqa: S104
        "port": 8123,
        "timeout_keep_alive": 7,
        "ws": "none",
        "access_log": False,
        "log_config": None,
    }


def test_tls_files_reach_uvicorn(monkeypatch):
    monkeypatch.setenv("MLOPS_GATEWAY__SSL_CERTFILE", "/certs/chain.pem")
    monkeypatch.setenv("MLOPS_GATEWAY__SSL_KEYFILE", "/certs/key.pem")
    reset_settings()
    options = server.uvicorn_options(get_settings(), "127.0.0.1", 8443, fd_limit=20000)
    assert options["ssl_certfile"] == "/certs/chain.pem"
    assert options["ssl_keyfile"] == "/certs/key.pem"


def test_refusals_are_logged_at_once_then_once_per_interval_with_the_count(log_lines):
    throttled = edge._Throttled("WARNING", "refused {count} ({limit})", every=0.2)

    async def burst():
        for _ in range(500):
            throttled(limit=7)
        await asyncio.sleep(0.3)  # the window closes: one line for the 499 held back
        await asyncio.sleep(0.3)  # a quiet window ends the throttling
        throttled(limit=7)

    asyncio.run(burst())
    assert [line["message"] for line in log_lines] == [
        "refused 1 (7)",
        "refused 499 (7)",
        "refused 1 (7)",
    ]


def test_server_counters_start_at_zero_in_every_registry():
    found = samples(GatewayMetrics().exposition())
    for reason in ("max_connections", "max_requests"):
        assert value(found, "mlops_connections_refused_total", reason=reason) is not None
    for phase in ("request_head", "keep_alive"):
        assert value(found, "mlops_connections_timed_out_total", phase=phase) is not None
    assert value(found, "mlops_connections_open") is not None
    assert value(found, "mlops_requests_rejected_total", reason="timeout") == 0


def test_metrics_need_the_bearer_token_when_one_is_set(monkeypatch):
    monkeypatch.setenv("MLOPS_GATEWAY__METRICS_TOKEN", "scrape-me")
    reset_settings()
    app = create_app(get_settings())

    async def scrape(headers: dict) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return await client.get("/metrics", headers=headers)

    assert asyncio.run(scrape({})).status_code == 401
    assert asyncio.run(scrape({"Authorization": "Bearer wrong"})).status_code == 401
    denied = asyncio.run(scrape({"Authorization": "Basic scrape-me"}))
    assert denied.status_code == 401 and denied.headers["www-authenticate"] == "Bearer"
    allowed = asyncio.run(scrape({"Authorization": "Bearer scrape-me"}))
    assert allowed.status_code == 200 and "mlops_connections_open" in allowed.text


# --- the body deadline (app/services/rows.py read_body) -----------------------------------


def slow_request(declared: bool) -> Request:
    """A request whose body starts but never finishes."""
    headers = [(b"content-length", b"100")] if declared else []
    sent = []

    async def receive():
        if not sent:
            sent.append(True)
            return {"type": "http.request", "body": b"{", "more_body": True}
        await asyncio.sleep(3600)

    return Request({"type": "http", "method": "POST", "headers": headers}, receive)


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_body_not_received_within_the_deadline_is_a_408(declared):
    async def read():
        started = asyncio.get_running_loop().time()
        with pytest.raises(RequestTimeout, match=r"within 0\.2 s") as info:
            await read_body(slow_request(declared), 1024, 0.2)
        return info.value, asyncio.get_running_loop().time() - started

    error, waited = asyncio.run(read())
    assert error.status_code == 408 and error.reason == "timeout"
    assert 0.2 <= waited < 2


def test_a_cancelled_body_read_stays_cancelled():
    """Only the deadline's own cancellation becomes a 408; a client gone or a shutdown does not."""

    async def read():
        task = asyncio.create_task(read_body(slow_request(True), 1024, 0.5))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(read())

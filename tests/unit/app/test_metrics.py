"""Gateway metrics (app/metrics.py): the class, the ASGI middleware on the real app, /metrics.

No Redis server: the requests used here are answered before the gateway touches Redis. What the
submitter and the sync wait count is tested with them (services/test_submitter.py,
services/test_dataplane.py); the queue-depth gauge in the integration test (its watcher also
sends INFO, which fakeredis does not know).
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from fastapi import FastAPI

from app.main import create_app
from app.metrics import GatewayMetrics, RequestMetrics, watch_event_loop
from app.state import Gateway
from core.settings import get_settings, reset_settings
from tests.factories import run, samples, value

KEY = "unit-predict-key"


# --- the class --------------------------------------------------------------------------


def test_names_follow_prometheus_conventions_and_every_reason_starts_at_zero():
    found = samples(GatewayMetrics(models=["iris"]).exposition())
    names = {name for name, _, _ in found}
    # Ours, and the process's own from prometheus-client's process and platform collectors.
    assert all(name.startswith(("mlops_", "process_", "python_")) for name in names)
    assert {"process_resident_memory_bytes", "process_open_fds", "python_info"} <= names
    assert not any(name.endswith("_created") for name in names)
    for reason in ("auth", "validation", "backpressure", "too_large", "unavailable"):
        assert value(found, "mlops_requests_rejected_total", reason=reason) == 0
    assert value(found, "mlops_jobs_submitted_total", kind="predict", model="iris") == 0
    assert value(found, "mlops_jobs_submitted_total", kind="train", model="iris") == 0
    assert value(found, "mlops_sync_wait_timeouts_total") == 0


def test_observe_request_counts_by_route_method_status_and_rejection_reason():
    metrics = GatewayMetrics()
    metrics.observe_request("/predict", "POST", 200, 0.003)
    metrics.observe_request("/predict", "POST", 200, 0.004)
    metrics.observe_request("/predict", "POST", 429, 0.001)
    metrics.observe_request("/jobs/{job_id}", "GET", 401, 0.001)
    metrics.observe_request("unmatched", "BREW", 404, 0.001)
    found = samples(metrics.exposition())
    requests = "mlops_http_requests_total"
    assert value(found, requests, route="/predict", method="POST", status="200") == 2
    assert value(found, requests, route="/predict", method="POST", status="429") == 1
    assert value(found, requests, route="unmatched", method="OTHER", status="404") == 1
    assert value(found, "mlops_http_request_duration_seconds_count", route="/predict") == 3
    assert value(found, "mlops_http_request_duration_seconds_sum", route="/predict") == (
        pytest.approx(0.008)
    )
    assert value(found, "mlops_requests_rejected_total", reason="backpressure") == 1
    assert value(found, "mlops_requests_rejected_total", reason="auth") == 1
    # A 404 is an answer, not a refusal.
    assert sum(v for n, _, v in found if n == "mlops_requests_rejected_total") == 2


def test_each_instance_has_its_own_registry():
    first, second = GatewayMetrics(), GatewayMetrics()
    first.observe_request("/health", "GET", 200, 0.001)
    found = samples(second.exposition())
    assert (
        value(found, "mlops_http_requests_total", route="/health", method="GET", status="200")
        is None
    )


def test_the_loop_lag_watcher_records_a_stall_of_the_event_loop():
    async def scenario():
        metrics = GatewayMetrics()
        watcher = asyncio.create_task(watch_event_loop(metrics, interval=0.01))
        await asyncio.sleep(0.05)
        time.sleep(0.3)  # noqa: ASYNC251 - holds the loop, as a slow request would
        await asyncio.sleep(0.05)
        watcher.cancel()
        return samples(metrics.exposition())

    found = run(scenario())
    lag = "mlops_event_loop_lag_seconds"
    stalls = value(found, f"{lag}_bucket", le="+Inf") - value(found, f"{lag}_bucket", le="0.25")
    assert stalls == 1
    assert value(found, f"{lag}_count") >= 3
    assert value(found, f"{lag}_sum") >= 0.29


# --- the middleware on the real app ------------------------------------------------------


@pytest.fixture
def gateway_app(monkeypatch):
    """The real app with its Gateway built but not started (no Redis call is made)."""
    monkeypatch.setenv("MLOPS_AUTH__API_KEYS", f"@json {json.dumps({KEY: ['predict']})}")
    monkeypatch.setenv("MLOPS_API__MAX_BODY_BYTES", "2048")
    reset_settings()
    app = create_app(get_settings())
    app.state.gateway = Gateway.from_settings(get_settings(), app.state.metrics)
    return app


def test_real_app_counts_route_templates_rejections_and_serves_metrics(gateway_app):
    async def scenario():
        transport = httpx.ASGITransport(app=gateway_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            assert (await client.get("/health")).status_code == 200
            assert (await client.get("/jobs/abc")).status_code == 401
            assert (await client.get("/jobs/def")).status_code == 401
            assert (await client.get("/no/such/path")).status_code == 404
            big = b"[" + b"1," * 2000 + b"1]"
            headers = {"X-API-Key": KEY, "Content-Type": "application/json"}
            assert (await client.post("/predict", content=big, headers=headers)).status_code == 413
            no_model = await client.post("/predict", json={"x": 1}, headers={"X-API-Key": KEY})
            assert no_model.status_code == 503, no_model.text
            response = await client.get("/metrics")
            await gateway_app.state.gateway.redis.aclose()
            await gateway_app.state.gateway.listener.client.aclose()
            return response

    response = run(scenario())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    requests = "mlops_http_requests_total"
    assert value(found, requests, route="/health", method="GET", status="200") == 1
    # The template, not the raw path: two job ids, one series.
    assert value(found, requests, route="/jobs/{job_id}", method="GET", status="401") == 2
    assert value(found, requests, route="unmatched", method="GET", status="404") == 1
    # Refused by the predict route's body limit (app/services/rows.py read_body).
    assert value(found, requests, route="/predict", method="POST", status="413") == 1
    assert value(found, requests, route="/predict", method="POST", status="503") == 1
    rejected = "mlops_requests_rejected_total"
    assert value(found, rejected, reason="auth") == 2
    assert value(found, rejected, reason="too_large") == 1
    assert value(found, rejected, reason="unavailable") == 1
    assert value(found, rejected, reason="validation") == 0


def test_a_request_that_raises_is_counted_as_a_500():
    app = FastAPI()
    metrics = GatewayMetrics()

    @app.get("/boom/{n}")
    async def boom(n: int):
        raise RuntimeError("bug")

    app.add_middleware(RequestMetrics, metrics=metrics)

    async def scenario():
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get("/boom/1")

    assert run(scenario()).status_code == 500
    found = samples(metrics.exposition())
    assert (
        value(found, "mlops_http_requests_total", route="/boom/{n}", method="GET", status="500")
        == 1
    )


# --- the connection counters of app/edge.py, and /metrics behind a token ------------------
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

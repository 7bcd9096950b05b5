"""A real Flower (`celery -A workers flower`, scripts/commands.py) against a private Redis.

flowerconfig.py turns settings into Flower's options: basic auth outside development, and a
refusal to start without a password. Flower's /metrics and /healthcheck stay open (Flower 2.x
does not put them behind basic auth): Prometheus and the compose healthcheck rely on that.
"""

from __future__ import annotations

import httpx
import pytest

from scripts import commands
from scripts.processes import Process, free_port, wait_until
from tests.factories import service_env
from tests.integration.stack import Stack, running

pytestmark = pytest.mark.integration

PASSWORD = "flower-test-password"


def start_flower(redis_server, tmp_path, **env: str) -> tuple[Process, int]:
    port = free_port()
    environ = service_env(
        redis_server.url, tmp_path / "artifacts", MLOPS_FLOWER__PORT=str(port), **env
    )
    return Process("flower", commands.flower(), environ, tmp_path / "logs").start(), port


def test_flower_requires_credentials_but_serves_metrics(redis_server, tmp_path):
    flower, port = start_flower(redis_server, tmp_path, MLOPS_FLOWER__PASSWORD=PASSWORD)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: httpx.get(f"{base}/healthcheck", timeout=2).status_code == 200,
            60,
            f"flower on port {port}\n{flower.output()}",
        )
        for path in ("/", "/workers", "/tasks", "/api/workers"):
            response = httpx.get(base + path, timeout=10)
            assert response.status_code == 401, path
        assert httpx.get(base + "/", auth=("admin", "wrong"), timeout=10).status_code == 401
        assert httpx.get(base + "/", auth=("admin", PASSWORD), timeout=10).status_code == 200
        metrics = httpx.get(base + "/metrics", timeout=10)
        assert metrics.status_code == 200
        assert "flower_" in metrics.text
    finally:
        flower.stop()


def test_flower_without_a_password_exits_outside_development(redis_server, tmp_path):
    flower, _ = start_flower(redis_server, tmp_path, MLOPS_FLOWER__PASSWORD="")
    try:
        flower.proc.wait(60)
        assert flower.proc.returncode != 0
        assert "refusing to start without a password" in flower.output()
    finally:
        flower.kill()


def test_the_broker_lists_every_queue_even_one_no_worker_consumes(tmp_path):
    """Flower listed the queues live workers consume: with a predict-only worker, `train` (and
    a retrain stuck in it) was missing from its Broker page."""

    def start(stack: Stack) -> None:
        stack.start_redis()
        assert stack.train().returncode == 0
        stack.start_worker("predictor", queues="predict")

    with running(Stack(tmp_path), start) as stack:
        port = free_port()
        env = stack.env(MLOPS_FLOWER__PORT=str(port), MLOPS_FLOWER__PASSWORD=PASSWORD)
        stack.services["flower"] = Process("flower", commands.flower(), env, stack.logs).start()
        base, auth = f"http://127.0.0.1:{port}", ("admin", PASSWORD)

        def workers() -> dict:
            return httpx.get(f"{base}/api/workers?refresh=1", auth=auth, timeout=10).json()

        wait_until(lambda: any("predictor" in name for name in workers()), 60, "flower sees it")
        queues = httpx.get(f"{base}/api/queues/length", auth=auth, timeout=10).json()
        assert {q["name"] for q in queues["active_queues"]} == {"predict", "train"}
        broker = httpx.get(f"{base}/broker", auth=auth, timeout=10)
        assert broker.status_code == 200
        assert ">train<" in broker.text.replace(" ", "").replace("\n", "")

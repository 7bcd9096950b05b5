"""A real Prometheus with the project's own deploy/prometheus/prometheus.yml against a running
service: gateway, one worker node (predict and train), Flower.

Only the targets change (compose names and DNS discovery become this stack's 127.0.0.1 ports)
and the intervals shrink to a second; the jobs, paths and the rule file are the project's. It
checks what no unit test can: every target answers Prometheus, every metric the Grafana
dashboard and the alert rules query is in what Prometheus scraped, and every rule evaluates.
A second model's queue (`big`) has no consumer, so the no-live-worker rule has something to
find and its oldest job something to wait for.
"""

from __future__ import annotations

import os
import shutil

import httpx
import pytest
import yaml

from scripts import commands
from scripts.processes import Process, free_port, wait_until
from tests.integration.stack import SEED_BODY, Stack, poll_job, running
from tests.promql import (
    ALERTS,
    PROMETHEUS_CONFIG,
    alert_rules,
    referenced_metrics,
)

pytestmark = pytest.mark.integration

PENGUINS = {
    "MLOPS_MODELS__PENGUINS__TRAINER": "csv",
    "MLOPS_MODELS__PENGUINS__CSV": '@json {"path": "tests/data/penguins_small.csv", '
    '"target": "species"}',
    "MLOPS_MODELS__PENGUINS__QUEUE": "big",
}
PENGUIN = {
    "bill_length_mm": 39.1,
    "bill_depth_mm": 18.7,
    "flipper_length_mm": 181.0,
    "body_mass_g": 3750.0,
}
PROMETHEUS_INSTALL = "sudo apt-get install prometheus (Debian, Ubuntu); brew install prometheus"


def prometheus_config(targets: dict[str, str]) -> dict:
    """The project's config with this stack's targets and 1 s intervals; nothing else changed."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert jobs == set(targets), f"a scrape job this test does not know: {jobs}"
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(ALERTS)]
    for job in config["scrape_configs"]:
        job.pop("dns_sd_configs", None)
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    return config


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    """(the stack, Prometheus' URL), with some traffic: sync predicts, a label, a retrain, a job
    waiting in the `big` queue, a drift check."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail(f"prometheus not found on PATH. Install it:\n  {PROMETHEUS_INSTALL}")
    workdir = tmp_path_factory.mktemp("prometheus")
    worker_port, flower_port, prometheus_port = free_port(), free_port(), free_port()

    def start(stack: Stack) -> None:
        stack.start_redis()
        for model in ("iris", "penguins"):
            trained = stack.train("train", "--model", model)
            assert trained.returncode == 0, trained.stderr
        stack.start_worker(
            "worker0",
            queues="predict,train",
            MLOPS_WORKER__METRICS_PORT=str(worker_port),
            MLOPS_WORKER__METRICS_DIR=str(workdir / "worker-metrics"),
        )
        stack.start_gateway()
        stack.wait_ready()
        flower_env = stack.env(MLOPS_FLOWER__PORT=str(flower_port), MLOPS_FLOWER__PASSWORD="pw")
        stack.services["flower"] = Process("flower", commands.flower(), flower_env, stack.logs)
        stack.services["flower"].start()
        config = workdir / "prometheus.yml"
        targets = {
            "api": f"127.0.0.1:{stack.gateway_port}",
            "worker": f"127.0.0.1:{worker_port}",
            "flower": f"127.0.0.1:{flower_port}",
        }
        config.write_text(yaml.safe_dump(prometheus_config(targets)))
        args = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
        ]
        server = Process("prometheus", args, dict(os.environ), stack.logs).start()
        stack.services["prometheus"] = server
        wait_until(
            lambda: httpx.get(f"{url}/-/ready", timeout=2).status_code == 200,
            30,
            f"prometheus ready\n{server.output()[-3000:]}",
        )
        traffic(stack)

    url = f"http://127.0.0.1:{prometheus_port}"
    with running(Stack(workdir, **PENGUINS), start) as stack:
        yield stack, url


def traffic(stack: Stack) -> None:
    with stack.client() as client:
        for i in range(3):
            body = {**SEED_BODY, "request_id": f"prometheus-{i}"}
            answered = client.post("/predict?wait=20", json=body)
            assert answered.status_code == 200, answered.text
        label = {"job_id": answered.json()["job_id"], "label": "setosa"}  # live quality
        assert client.post("/feedback", json=label).status_code == 200
        waiting = client.post("/models/penguins/predict", json=PENGUIN)  # nobody consumes `big`
        assert waiting.status_code == 202, waiting.text
    with stack.admin() as admin:
        accepted = admin.post("/retrain", params={"force": "true"})
        assert accepted.status_code == 202, accepted.text
        assert poll_job(admin, accepted.json()["job_id"], timeout=120)["status"] == "SUCCESS"
        version = admin.get("/models/iris").json()["production_version"]
    # A drift check of logged inputs, for the drift gauges (the gateway exports the stored one).
    rows = [[5.1, 3.5, 1.4 + i % 50 / 10, 0.2] for i in range(150)]
    stack.log_predictions("iris", version, rows, ["setosa"] * len(rows))
    assert stack.check_drift("iris")["status"] in ("ok", "drift")


def api(url: str, path: str, **params) -> object:
    answer = httpx.get(f"{url}/api/v1/{path}", params=params, timeout=10).json()
    assert answer["status"] == "success", answer
    return answer["data"]


def test_every_target_is_up(prometheus):
    _, url = prometheus

    def health() -> dict[str, str]:
        targets = api(url, "targets")["activeTargets"]
        return {t["labels"]["job"]: (t["health"], t["lastError"]) for t in targets}

    wait_until(lambda: {health for health, _ in health().values()} == {"up"}, 30, "all targets up")
    assert set(health()) == {"api", "worker", "flower"}


def test_every_metric_the_dashboard_and_alerts_query_was_scraped(prometheus):
    _, url = prometheus
    wanted = referenced_metrics()
    missing: dict = {}

    def scraped_all() -> bool:
        names = set(api(url, "label/__name__/values"))
        missing.clear()
        missing.update({name: sorted(wanted[name]) for name in set(wanted) - names})
        return not missing

    try:
        wait_until(scraped_all, 30, "every queried metric scraped")
    except TimeoutError:
        pytest.fail(f"queried but never scraped: {missing}")


def test_the_gateway_and_the_worker_publish_process_metrics(prometheus):
    _, url = prometheus
    query = "process_resident_memory_bytes > 0 and on (job, instance) process_open_fds > 0"
    wait_until(
        lambda: (
            {r["metric"]["job"] for r in api(url, "query", query=query)["result"]}
            >= {"api", "worker"}
        ),
        30,
        "process metrics of the gateway and the worker",
    )


def test_every_alert_rule_evaluates_against_the_real_series(prometheus):
    _, url = prometheus
    names = {rule["alert"] for rule in alert_rules()}

    def healthy() -> dict[str, str]:
        groups = api(url, "rules")["groups"]
        return {r["name"]: r["health"] for g in groups for r in g["rules"]}

    wait_until(lambda: set(healthy().values()) == {"ok"}, 30, f"rules healthy: {healthy()}")
    assert set(healthy()) == names


def test_the_unconsumed_queue_is_found_and_its_job_ages(prometheus):
    _, url = prometheus
    no_worker = next(r["expr"] for r in alert_rules() if r["alert"] == "MlopsNoLiveWorker")

    def queues(query: str) -> set[str]:
        return {r["metric"]["queue"] for r in api(url, "query", query=query)["result"]}

    wait_until(lambda: queues(no_worker) == {"big"}, 30, "the no-live-worker rule's result")
    wait_until(
        lambda: queues("mlops_queue_oldest_job_age_seconds > 1") == {"big"},
        30,
        "the oldest job of `big` ageing (and none elsewhere)",
    )

"""Metrics and logs of the real service: gateway /metrics, the worker node's metrics port
(prefork pool of 2 children, prometheus-client multiprocess mode) and JSON log lines that
carry the same request_id and job_id in the gateway's and the worker's output.
"""

from __future__ import annotations

import json
import signal
import uuid

import httpx
import pytest

from scripts.processes import free_port, wait_until
from tests.factories import scrape, total
from tests.integration.stack import SEED_BODY, Stack, poll_job, running

pytestmark = pytest.mark.integration

CHILDREN = 2
SERVING = CHILDREN + 1  # and the main process, which serves a single idle client (workers/pool.py)


@pytest.fixture(scope="module")
def observed(tmp_path_factory):
    """Redis, one worker node with 2 pool children and a metrics port, the gateway; JSON logs."""
    workdir = tmp_path_factory.mktemp("observability")
    port = free_port()

    def start(stack: Stack) -> None:
        stack.start_redis()
        trained = stack.train()
        assert trained.returncode == 0, trained.stderr
        stack.start_worker(
            "worker0",
            concurrency=CHILDREN,
            MLOPS_WORKER__METRICS_PORT=str(port),
            MLOPS_WORKER__METRICS_DIR=str(workdir / "worker-metrics"),
        )
        stack.start_gateway()
        stack.wait_ready()

    with running(Stack(workdir, MLOPS_LOGGING__JSON="true"), start) as stack:
        yield stack, f"http://127.0.0.1:{port}/metrics"


def predict(stack: Stack, request_id: str) -> httpx.Response:
    with stack.client() as client:
        return client.post("/predict?wait=20", json={**SEED_BODY, "request_id": request_id})


def test_a_prediction_moves_the_gateway_and_worker_metrics(observed):
    stack, worker_url = observed
    gateway_url = f"{stack.url}/metrics"
    gateway_before, worker_before = scrape(gateway_url), scrape(worker_url)
    jobs = 5
    for i in range(jobs):
        response = predict(stack, f"metrics-{i}")
        assert response.status_code == 200, response.text
    with stack.client(key=None) as anonymous:
        assert anonymous.post("/predict", json=SEED_BODY).status_code == 401
    with stack.client() as client:
        assert client.post("/predict", json={"sepal_length": 1}).status_code == 422

    gateway = scrape(gateway_url)

    def grew(name: str, **labels: str) -> float:
        return total(gateway, name, **labels) - total(gateway_before, name, **labels)

    ok = {"route": "/predict", "method": "POST", "status": "200"}
    assert grew("mlops_http_requests_total", **ok) == jobs
    assert grew("mlops_http_request_duration_seconds_count", route="/predict") == jobs + 2
    assert grew("mlops_jobs_submitted_total", kind="predict", model="iris") == jobs
    assert grew("mlops_requests_rejected_total", reason="auth") == 1
    assert grew("mlops_requests_rejected_total", reason="validation") == 1
    queues = {labels["queue"] for name, labels, _ in gateway if name == "mlops_queue_depth"}
    assert queues == {"predict", "train"}

    # A worker records its batch after publishing the results: the client can be faster.
    def worker_grew(name: str, **labels: str) -> float:
        return total(scrape(worker_url), name, **labels) - total(worker_before, name, **labels)

    wait_until(
        lambda: worker_grew("mlops_predictions_total", model="iris", status="success") == jobs,
        30,
        "the worker's prediction counter",
    )
    worker = scrape(worker_url)

    def worker_delta(name: str) -> float:
        return total(worker, name) - total(worker_before, name)

    batches = worker_delta("mlops_batches_total")
    assert 1 <= batches <= jobs
    assert worker_delta("mlops_batch_size_count") == batches
    assert worker_delta("mlops_batch_size_sum") == jobs
    assert worker_delta("mlops_inference_duration_seconds_count") == batches
    assert total(worker, "mlops_predictions_total", status="failure") == 0
    # Each pool child and the main process loaded the model and report it with their pids.
    with stack.client() as client:
        production = str(client.get("/version").json()["model_version"])
    served = [(labels, v) for name, labels, v in worker if name == "mlops_model_info" and v]
    assert {labels["version"] for labels, _ in served} == {production}
    pids = {labels["pid"] for labels, _ in served}
    assert len(pids) == SERVING and str(stack.services["worker0"].pid) in pids
    assert total(worker, "mlops_model_load_duration_seconds_count") >= SERVING


def test_a_retrain_moves_the_retrain_and_model_metrics(observed):
    stack, worker_url = observed
    gateway_before, worker_before = stack.metrics(), scrape(worker_url)
    with stack.admin() as admin:
        accepted = admin.post("/retrain", params={"force": "true"})
        assert accepted.status_code == 202, accepted.text
        job = poll_job(admin, accepted.json()["job_id"], timeout=120)
    assert job["status"] == "SUCCESS", job
    result = job["result"]
    gateway = stack.metrics()
    submitted = total(gateway, "mlops_jobs_submitted_total", kind="train", model="iris")
    assert submitted - total(gateway_before, "mlops_jobs_submitted_total", kind="train") == 1

    outcome = result["decision"]
    before = total(worker_before, "mlops_retrains_total", model="iris", outcome=outcome)
    wait_until(
        lambda: (
            total(scrape(worker_url), "mlops_retrains_total", model="iris", outcome=outcome)
            == before + 1
        ),
        30,
        f"mlops_retrains_total{{outcome={outcome!r}}}",
    )
    if not result["promoted"]:
        return
    new, old = str(result["version"]), str(result["version"] - 1)

    def switched() -> bool:
        worker = scrape(worker_url)
        return (
            total(worker, "mlops_model_info", version=new) == SERVING
            and total(worker, "mlops_model_info", version=old) == 0
        )

    wait_until(switched, 30, f"every process serving v{new}")
    metric = result["metric"]
    served_metric = total(scrape(worker_url), "mlops_model_metric", metric=metric)
    assert served_metric == pytest.approx(result["metrics"][metric])


def test_queue_depth_follows_the_predict_queue(observed):
    stack, _ = observed
    worker = stack.services["worker0"]
    worker.signal_group(signal.SIGSTOP)  # nobody consumes: the messages wait in Redis
    try:
        with stack.client() as client:
            job_ids = [
                client.post("/predict", json={**SEED_BODY, "request_id": f"queued-{i}"}).json()[
                    "job_id"
                ]
                for i in range(3)
            ]
        waiting = stack.redis.client().llen("predict")
        assert waiting >= 1

        def gauge() -> float:
            return total(stack.metrics(), "mlops_queue_depth", queue="predict")

        wait_until(lambda: gauge() == waiting, 10, f"mlops_queue_depth == {waiting}")
    finally:
        worker.signal_group(signal.SIGCONT)
    with stack.client() as client:
        for job_id in job_ids:
            assert poll_job(client, job_id)["status"] == "SUCCESS"
    wait_until(lambda: gauge() == 0, 10, "mlops_queue_depth back to 0")


def json_lines(text: str) -> list[dict]:
    records = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                records.append(json.loads(line)["record"])
            except (ValueError, KeyError):
                continue
    return records


def test_one_request_id_follows_a_prediction_through_gateway_and_worker_logs(observed):
    stack, _ = observed
    request_id = f"trace-{uuid.uuid4().hex}"
    response = predict(stack, request_id)
    assert response.status_code == 200, response.text
    job_id = response.json()["job_id"]

    def carrying(service: str) -> list[dict]:
        return [
            record
            for record in json_lines(stack.services[service].output())
            if request_id in str(record["extra"].get("request_id", "")).split(",")
        ]

    wait_until(lambda: carrying("gateway") and carrying("worker0"), 30, "both log lines")
    for service in ("gateway", "worker0"):
        for record in carrying(service):
            extra = record["extra"]
            ids = extra["request_id"].split(",")
            assert job_id in extra["job_id"].split(",")
            # The lists are aligned: the n-th request_id belongs to the n-th job_id.
            assert extra["job_id"].split(",")[ids.index(request_id)] == job_id
            assert record["level"]["name"] == "INFO"

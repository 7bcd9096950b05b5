"""The prediction path end to end: HTTP gateway -> Redis -> real worker -> result (issue 3)."""

from __future__ import annotations

import asyncio
import importlib.metadata
import time

import httpx
import numpy as np
import pytest

from core.settings import get_settings
from scripts.processes import wait_until
from tests.integration.stack import ADMIN_KEY, PREDICT_KEY, SEED_BODY, Stack, poll_job
from training.serialization import load_model

pytestmark = pytest.mark.integration

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
API_VERSION = importlib.metadata.version("two-mlops")


def local_model(stack: Stack, version: int):
    """The same artifact the worker serves, loaded in the test process."""
    store = stack.store()
    return load_model(store, version, get_settings())[1]


def expected(model, rows: list[list[float]]) -> tuple[list, list[list[float]]]:
    matrix = np.asarray(rows, dtype=np.float64)
    return model.predict(matrix).tolist(), np.round(model.predict_proba(matrix), 6).tolist()


def assert_answers(result: dict, model, rows: list[list[float]]) -> None:
    predictions, probabilities = expected(model, rows)
    assert result["status"] == "SUCCESS", result
    assert result["predictions"] == predictions
    assert np.allclose(result["probabilities"], probabilities, atol=1e-6)
    assert result["classes"] == model.classes_.tolist()


def distinct_row(i: int) -> list[float]:
    """Row i of a sweep across all three species, each row unique."""
    return [4.3 + (i % 36) * 0.1, 2.0 + (i % 24) * 0.1, 1.0 + (i % 60) * 0.1, 0.1 + i * 0.0115]


# -- async and sync ---------------------------------------------------------------------------
def test_seed_body_async_submit_then_poll(stack):
    with stack.client() as client:
        response = client.post("/predict", json=SEED_BODY)
        assert response.status_code == 202, response.text
        body = response.json()
        assert body["status"] == "PENDING"
        assert body["request_id"] == "integration-test-id"
        assert body["location"] == f"/jobs/{body['job_id']}"
        assert response.headers["location"] == body["location"]
        result = poll_job(client, body["job_id"])
    assert result["status"] == "SUCCESS", result
    assert result["job_id"] == body["job_id"]
    assert result["predictions"] == ["setosa"]
    assert result["model_name"] == "iris"
    assert result["model_version"] == 1
    assert result["api_version"] == API_VERSION == "0.1.0"
    assert result["request_id"] == "integration-test-id"
    assert result["classes"] == ["setosa", "versicolor", "virginica"]
    assert result["probabilities"][0][0] == max(result["probabilities"][0])


def test_sync_wait_query_answers_200_with_the_result(stack):
    with stack.client() as client:
        response = client.post("/predict", params={"wait": 10}, json=SEED_BODY)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["status"] == "SUCCESS"
    assert result["predictions"] == ["setosa"]
    assert result["request_id"] == "integration-test-id"
    assert result["model_version"] == 1


def test_sync_wait_prefer_header_answers_200(stack):
    with stack.client() as client:
        response = client.post("/predict", json=SEED_BODY, headers={"Prefer": "wait=10"})
        assert response.status_code == 200, response.text
        result = response.json()
        # The finished job is also readable by id afterwards.
        again = client.get(f"/jobs/{result['job_id']}")
    assert result["predictions"] == ["setosa"]
    assert again.status_code == 200
    assert again.json()["predictions"] == ["setosa"]


def test_batches_of_objects_lists_and_both(stack):
    model = local_model(stack, 1)
    rows = [distinct_row(i) for i in (0, 17, 45, 59)]
    objects = [dict(zip(FEATURES, row, strict=True)) for row in rows]
    mixed = [objects[0], rows[1], objects[2], rows[3]]
    with stack.client() as client:
        for instances in (objects, rows, mixed):
            response = client.post(
                "/predict",
                params={"wait": 10},
                json={"request_id": "batch", "instances": instances},
            )
            assert response.status_code == 200, response.text
            result = response.json()
            assert result["request_id"] == "batch"
            assert len(result["predictions"]) == len(rows)
            assert_answers(result, model, rows)
    assert len(set(expected(model, rows)[0])) > 1  # the rows span more than one class


def test_many_concurrent_requests_each_get_their_own_answer(stack):
    model = local_model(stack, 1)
    count = 200
    rows = [distinct_row(i) for i in range(count)]

    async def one(client: httpx.AsyncClient, i: int) -> dict:
        body = {"request_id": f"req-{i}", **dict(zip(FEATURES, rows[i], strict=True))}
        response = await client.post("/predict", params={"wait": 20}, json=body)
        assert response.status_code in (200, 202), response.text
        result = response.json()
        while result["status"] not in ("SUCCESS", "FAILURE"):  # 202: the worker was slow
            await asyncio.sleep(0.1)
            result = (await client.get(f"/jobs/{result['job_id']}")).json()
        return result

    async def all_of_them() -> list[dict]:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(
            base_url=stack.url, headers={"X-API-Key": PREDICT_KEY}, timeout=60, limits=limits
        ) as client:
            return await asyncio.gather(*(one(client, i) for i in range(count)))

    results = asyncio.run(all_of_them())
    predictions, probabilities = expected(model, rows)
    assert len({r["job_id"] for r in results}) == count
    for i, result in enumerate(results):
        assert result["status"] == "SUCCESS", result
        assert result["request_id"] == f"req-{i}"
        assert result["predictions"] == [predictions[i]], i
        assert np.allclose(result["probabilities"], [probabilities[i]], atol=1e-6), i
    assert len(set(predictions)) == 3


# -- reading jobs, system and model endpoints -------------------------------------------------
def test_unknown_job_is_404_with_a_message(stack):
    with stack.client() as client:
        response = client.get("/jobs/no-such-job")
    assert response.status_code == 404
    assert "unknown job id 'no-such-job'" in response.json()["detail"]


def test_health_ready_and_version(stack):
    stack.wait_ready(timeout=15)  # a heartbeat may lag behind on a loaded machine
    with stack.client(key=None) as client:
        health = client.get("/health")
        ready = client.get("/ready")
        version = client.get("/version")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["status"] == "ready" and body["reasons"] == []
    assert body["model_name"] == "iris" and body["model_version"] == 1
    assert body["workers"], body
    assert all("predict" in w["queues"] for w in body["workers"])
    assert body["workers"][0]["model_version"] == 1
    assert version.status_code == 200
    assert version.json() == {"api_version": API_VERSION, "model_name": "iris", "model_version": 1}


def test_models_lists_versions_with_metrics_and_workers(stack):
    with stack.client() as client:
        listing = client.get("/models")
        one = client.get("/models/1")
        missing = client.get("/models/99")
    assert listing.status_code == 200, listing.text
    body = listing.json()
    assert body["model_name"] == "iris"
    assert body["production_version"] == 1
    [version] = body["versions"]
    assert version["version"] == 1 and version["production"] is True
    assert 0.8 <= version["metrics"]["accuracy"] <= 1.0
    assert "confusion_matrix" not in version
    assert body["workers"] and body["workers"][0]["model_version"] == 1
    assert one.status_code == 200
    assert one.json()["version"] == 1 and one.json()["production"] is True
    assert [f["name"] for f in one.json()["features"]] == FEATURES
    assert missing.status_code == 404
    assert "99" in missing.json()["detail"]


def test_docs_and_openapi(stack):
    with stack.client(key=None) as client:
        docs = client.get("/docs")
        spec = client.get("/openapi.json")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    assert {"/predict", "/jobs/{job_id}", "/models", "/retrain", "/ready"} <= paths.keys()
    assert spec.json()["info"]["version"] == API_VERSION


# -- auth -------------------------------------------------------------------------------------
def test_auth_missing_and_wrong_keys_are_401(stack):
    for key in (None, "wrong-key"):
        with stack.client(key=key) as client:
            predict = client.post("/predict", json=SEED_BODY)
            job = client.get("/jobs/anything")
        for response in (predict, job):
            assert response.status_code == 401, response.text
            assert response.headers["www-authenticate"] == "ApiKey"
            assert "API key" in response.json()["detail"]


def test_a_predict_key_cannot_retrain_but_an_admin_key_can_predict(stack):
    with stack.client(PREDICT_KEY) as client:
        forbidden = client.post("/retrain")
    with stack.client(ADMIN_KEY) as admin:
        predicted = admin.post("/predict", params={"wait": 10}, json=SEED_BODY)
    assert forbidden.status_code == 403
    assert "'admin'" in forbidden.json()["detail"]
    assert predicted.status_code == 200
    assert predicted.json()["predictions"] == ["setosa"]


# -- retrain (changes the production version: keep it last among the shared-stack tests) ------
def test_retrain_promotes_a_version_the_running_worker_serves(stack):
    worker = stack.services["worker0"]
    pid = worker.pid
    with stack.admin() as admin:
        response = admin.post("/retrain", params={"force": "true"})  # the same data: forced
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        assert response.headers["location"] == f"/jobs/{job_id}"
        result = poll_job(admin, job_id, timeout=180)
    assert result["status"] == "SUCCESS", result
    assert result["kind"] == "train"
    assert result["result"]["decision"] == "promoted", result
    assert result["result"]["version"] == 2

    def served_by_v2() -> bool:
        with stack.client() as client:
            answer = client.post("/predict", params={"wait": 10}, json=SEED_BODY).json()
        return answer["model_version"] == 2 and answer["predictions"] == ["setosa"]

    wait_until(served_by_v2, 30, "predictions from model version 2")
    assert worker.alive() and worker.pid == pid  # no restart
    with stack.client() as client:
        models = client.get("/models").json()
        assert_answers(
            client.post(
                "/predict", params={"wait": 10}, json={"instances": [[6.7, 3, 5.2, 2.3]]}
            ).json(),
            local_model(stack, 2),
            [[6.7, 3, 5.2, 2.3]],
        )
    assert models["production_version"] == 2
    assert models["previous_versions"] == [1]
    assert [v["production"] for v in models["versions"]] == [False, True]


# -- tests with their own stack ---------------------------------------------------------------
@pytest.mark.serial
def test_a_wait_that_ends_first_answers_202_and_the_job_is_kept(fresh_stack):
    fresh_stack.start()
    fresh_stack.services["worker0"].stop()
    with fresh_stack.client() as client:
        started = time.monotonic()
        response = client.post("/predict", params={"wait": 0.5}, json=SEED_BODY)
        elapsed = time.monotonic() - started
        assert response.status_code == 202, response.text
        assert 0.5 <= elapsed < 3.0, elapsed
        job_id = response.json()["job_id"]
        assert response.headers["location"] == f"/jobs/{job_id}"
        assert client.get(f"/jobs/{job_id}").json()["status"] == "PENDING"
        fresh_stack.start_worker("worker1")
        result = poll_job(client, job_id, timeout=60)
    assert result["status"] == "SUCCESS", result
    assert result["predictions"] == ["setosa"]
    assert result["request_id"] == "integration-test-id"


def test_auth_disabled_warns_and_accepts_requests_without_a_key(fresh_stack):
    fresh_stack.start_redis()
    assert fresh_stack.train().returncode == 0
    gateway = fresh_stack.start_gateway(MLOPS_AUTH__ENABLED="false")
    with fresh_stack.client(key=None) as client:
        response = client.post("/predict", json=SEED_BODY)
        assert response.status_code == 202, response.text
        job = client.get(f"/jobs/{response.json()['job_id']}")
        assert job.status_code == 200 and job.json()["status"] == "PENDING"
        assert client.get("/models").status_code == 200
    assert "auth is DISABLED" in gateway.output()

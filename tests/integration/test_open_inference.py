"""The Open Inference Protocol (KServe V2, REST) against a real stack, written from its
specification (specification/protocol/inference_rest.md of kserve/open-inference-protocol):
every endpoint, flat and nested data, batches, output selection, version pinning, each error
as ``{"error": ...}`` with nothing queued; and tritonclient's HTTP client as its users call it.
"""

from __future__ import annotations

import importlib.metadata
import json

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from scripts.processes import wait_until
from tests.factories import total
from tests.integration.stack import ADMIN_KEY, PREDICT_KEY, Stack, running

pytestmark = pytest.mark.integration

API_VERSION = importlib.metadata.version("two-mlops")
CLASSES = ["setosa", "versicolor", "virginica"]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3]]
MAX_INSTANCES = 1000  # settings.toml api.max_instances
MAX_BODY_BYTES = 1_048_576  # settings.toml api.max_body_bytes


def tensor(rows=ROWS, datatype="FP64", flat=True, **fields) -> dict:
    data = [v for row in rows for v in row] if flat else rows
    return {
        "name": "input-0",
        "shape": [len(rows), 4],
        "datatype": datatype,
        "data": data,
        **fields,
    }


def infer_body(*inputs, **fields) -> dict:
    return {"inputs": list(inputs) or [tensor()], **fields}


def distinct_rows(n: int) -> list[list[float]]:
    """``n`` different rows from small to large petals: every species once n > 10."""
    steps = [i / max(n - 1, 1) for i in range(n)]
    return [
        [4.3 + 3.6 * t, 2.0 + (i % 24) * 0.1, 1.0 + 5.9 * t, 0.1 + 2.4 * t]
        for i, t in enumerate(steps)
    ]


def job_count(stack: Stack) -> int:
    return sum(1 for _ in stack.redis.client().scan_iter("mlops:job:*", count=1000))


def predict_answer(client, rows) -> dict:
    response = client.post("/predict", params={"wait": 20}, json={"instances": rows})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def two_versions(stack) -> Stack:
    """The shared stack with a second version of iris trained (it becomes production)."""
    result = stack.train()
    assert result.returncode == 0, result.stderr
    assert stack.store().versions() == [1, 2]
    wait_until(
        lambda: stack.client().get("/v2/models/iris").json()["versions"] == ["1", "2"],
        10,
        "the gateway to see version 2",
    )
    return stack


# -- server ----------------------------------------------------------------------------------------
def test_server_metadata_live_and_ready(stack):
    with stack.client(key=None) as client:
        metadata = client.get("/v2")
        live = client.get("/v2/health/live")
        ready = client.get("/v2/health/ready")
    assert metadata.status_code == 200
    assert metadata.json() == {
        "name": "two-mlops",
        "version": API_VERSION,
        "extensions": ["binary_tensor_data"],
    }
    assert (live.status_code, live.json()) == (200, {"live": True})
    assert (ready.status_code, ready.json()) == (200, {"ready": True})


# -- models ----------------------------------------------------------------------------------------
def test_model_metadata_names_its_tensors(stack):
    with stack.client() as client:
        response = client.get("/v2/models/iris")
        pinned = client.get("/v2/models/iris/versions/1")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "name": "iris",
        "versions": ["1"],
        "platform": "sklearn_joblib",
        "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}],
        "outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, 3]},
        ],
    }
    assert pinned.json() == response.json()


def test_model_ready(stack):
    with stack.client() as client:
        ready = client.get("/v2/models/iris/ready")
        pinned = client.get("/v2/models/iris/versions/1/ready")
        missing = client.get("/v2/models/iris/versions/9/ready")
    assert (ready.status_code, ready.json()) == (200, {"name": "iris", "ready": True})
    assert (pinned.status_code, pinned.json()) == (200, {"name": "iris", "ready": True})
    assert missing.status_code == 404
    assert "no version 9" in missing.json()["error"]


# -- inference -------------------------------------------------------------------------------------
def test_the_specifications_request_shape_flat_data_with_an_id(stack):
    with stack.client() as client:
        response = client.post("/v2/models/iris/infer", json=infer_body(tensor(ROWS[:1]), id="42"))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model_name"] == "iris"
    assert answer["model_version"] == "1"
    assert answer["id"] == "42"
    assert answer["parameters"]["api_version"] == API_VERSION
    label, probabilities = answer["outputs"]
    assert label == {"name": "label", "shape": [1], "datatype": "BYTES", "data": ["setosa"]}
    assert probabilities["name"] == "probabilities"
    assert probabilities["shape"] == [1, 3]
    assert probabilities["datatype"] == "FP64"
    assert len(probabilities["data"]) == 3
    assert probabilities["data"][0] == max(probabilities["data"])


def test_flat_and_nested_batches_answer_as_predict_does(stack):
    rows = distinct_rows(40)
    with stack.client() as client:
        expected = predict_answer(client, rows)
        answers = [
            client.post("/v2/models/iris/infer", json=infer_body(tensor(rows, flat=flat)))
            for flat in (True, False)
        ]
    for response in answers:
        assert response.status_code == 200, response.text
        label, probabilities = response.json()["outputs"]
        assert label["shape"] == [40]
        assert label["data"] == expected["predictions"]
        assert probabilities["shape"] == [40, 3]
        assert np.allclose(
            np.reshape(probabilities["data"], (40, 3)), expected["probabilities"], atol=1e-9
        )
    assert len(set(expected["predictions"])) == 3
    assert answers[0].json()["id"] != answers[1].json()["id"]  # no id sent: the job's


@pytest.mark.parametrize(
    ("rows", "datatype"),
    [
        ([[5, 3, 1, 0], [6, 3, 5, 2]], "INT64"),
        ([[5, 3, 1, 0], [6, 3, 5, 2]], "INT32"),
        ([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], "FP32"),
    ],
)
def test_integer_and_fp32_inputs(stack, rows, datatype):
    with stack.client() as client:
        expected = predict_answer(client, rows)
        response = client.post("/v2/models/iris/infer", json=infer_body(tensor(rows, datatype)))
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == expected["predictions"]


@pytest.mark.parametrize(
    ("asked", "names"),
    [
        (["label"], ["label"]),
        (["probabilities"], ["probabilities"]),
        (["probabilities", "label"], ["probabilities", "label"]),
    ],
)
def test_outputs_asked_for(stack, asked, names):
    body = infer_body(outputs=[{"name": name} for name in asked])
    with stack.client() as client:
        response = client.post("/v2/models/iris/infer", json=body)
    assert response.status_code == 200, response.text
    assert [t["name"] for t in response.json()["outputs"]] == names


def test_a_key_without_auth_is_refused_and_an_admin_key_is_served(stack):
    with stack.client(key=None) as anonymous, stack.client(key="wrong") as wrong:
        missing = anonymous.post("/v2/models/iris/infer", json=infer_body())
        invalid = wrong.post("/v2/models/iris/infer", json=infer_body())
        metadata = anonymous.get("/v2/models/iris")
    with stack.client(key=ADMIN_KEY) as admin:
        served = admin.post("/v2/models/iris/infer", json=infer_body())
    for response in (missing, invalid, metadata):
        assert response.status_code == 401, response.text
        assert response.json().keys() == {"error"}
    assert served.status_code == 200


def test_the_same_idempotency_key_answers_with_the_same_job(stack):
    headers = {"Idempotency-Key": "v2-order-1"}
    with stack.client() as client:
        before = job_count(stack)
        first = client.post("/v2/models/iris/infer", json=infer_body(), headers=headers)
        again = client.post("/v2/models/iris/infer", json=infer_body(), headers=headers)
        other = client.post(
            "/v2/models/iris/infer", json=infer_body(tensor(ROWS[:1])), headers=headers
        )
    assert first.status_code == again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert job_count(stack) == before + 1
    assert other.status_code == 409
    assert "different body" in other.json()["error"]


def test_a_binary_request_as_tritonclient_sends_it(stack):
    rows = np.asarray(ROWS, dtype=np.float64)
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [3, 4],
                    "datatype": "FP64",
                    "parameters": {"binary_data_size": rows.nbytes},
                }
            ]
        }
    ).encode()
    with stack.client() as client:
        expected = predict_answer(client, ROWS)
        response = client.post(
            "/v2/models/iris/infer",
            content=head + rows.astype("<f8").tobytes(),
            headers={"Inference-Header-Content-Length": str(len(head))},
        )
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == expected["predictions"]


# -- errors: 400/404 naming the problem, nothing queued --------------------------------------------
def with_input(**changes) -> dict:
    return infer_body({**tensor(), **changes})


def without(field: str) -> dict:
    body = tensor()
    del body[field]
    return infer_body(body)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (
            with_input(shape=[3, 4], data=[1.0] * 11),
            "shape [3, 4] (12 values) but its 'data' holds 11",
        ),
        (with_input(shape=[2, 4]), "shape [2, 4] (8 values) but its 'data' holds 12"),
        (with_input(datatype="FLOAT64"), "unknown datatype 'FLOAT64'"),
        (with_input(datatype="INT64"), "5.1 is not an integer"),
        (with_input(data=["5.1"] * 12), "'5.1' is not a number"),
        (with_input(data=["a"] * 12, datatype="BYTES"), "not BYTES"),
        (with_input(name="features"), "missing input 'input-0'"),
        ({"inputs": []}, "'inputs' must be a list"),
        ({"id": "no inputs"}, "'inputs' must be a list"),
        (without("data"), "has no 'data'"),
        (without("shape"), "must have shape [n, 4]"),
        (with_input(shape=[2, 6], data=[1.0] * 12), "must have shape [n, 4]"),
        (with_input(shape=[4, 3], data=[1.0] * 12), "must have shape [n, 4]"),
        (with_input(data=[[1.0] * 4] * 2), "must be 3 lists of 4 values"),
        (infer_body(outputs=[{"name": "predict_proba"}]), "unknown output 'predict_proba'"),
        (infer_body(tensor(), {**tensor(), "name": "input-1"}), "unexpected input 'input-1'"),
        (infer_body(id=42), "'id' must be a string"),
        (
            infer_body(tensor([[1.0] * 4] * (MAX_INSTANCES + 1))),
            f"1 to {MAX_INSTANCES} rows, got {MAX_INSTANCES + 1}",
        ),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_bad_requests_are_400_naming_the_problem_and_queue_nothing(stack, body, says):
    with stack.client() as client:
        before = job_count(stack)
        response = client.post("/v2/models/iris/infer", json=body)
    assert response.status_code == 400, response.text
    assert response.json().keys() == {"error"}
    assert says in response.json()["error"]
    assert job_count(stack) == before


def test_the_specifications_example_request_verbatim_is_told_what_this_model_takes(stack):
    example = {
        "id": "42",
        "inputs": [
            {"name": "input0", "shape": [2, 2], "datatype": "UINT32", "data": [1, 2, 3, 4]},
            {"name": "input1", "shape": [3], "datatype": "BOOL", "data": [True]},
        ],
        "outputs": [{"name": "output0"}],
    }
    with stack.client() as client:
        response = client.post("/v2/models/iris/infer", json=example)
    assert response.status_code == 400
    error = response.json()["error"]
    assert "missing input 'input-0' (got 'input0', 'input1')" in error
    assert "rows of 4 features (sepal_length, sepal_width, petal_length, petal_width)" in error


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b'{"inputs": [', "invalid JSON"),
        (b'{"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", '
         b'"data": [NaN, 1, 2, 3]}]}', "body.inputs.0.data.0: must be a finite number"),
    ],
)  # fmt: skip
def test_bodies_that_are_not_json_are_400(stack, raw, says):
    with stack.client() as client:
        response = client.post("/v2/models/iris/infer", content=raw)
    assert response.status_code == 400, response.text
    assert says in response.json()["error"]


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/v2/models/penguins/infer", "unknown model 'penguins'"),
        ("/v2/models/Iris!/infer", "unknown model 'Iris!'"),
        ("/v2/models/..%2F..%2Fetc/infer", "Not Found"),
        ("/v2/models/%2e%2e/infer", "unknown model '..'"),
        ("/v2/models/iris/versions/9/infer", "no version 9"),
        ("/v2/models/iris/versions/v1/infer", "no version 'v1'"),
        ("/v2/models/iris/versions/0/infer", "no version '0'"),
        ("/v2/models/iris/versions/99999999999999999999/infer", "no version"),
        ("/v2/models/penguins", "unknown model"),
        ("/v2/models/penguins/ready", "unknown model"),
        ("/v2/models/iris/versions/9", "no version 9"),
        ("/v2/models/iris/predict", "Not Found"),
    ],
)
def test_unknown_models_and_versions_are_404_and_queue_nothing(stack, path, says):
    with stack.client() as client:
        before = job_count(stack)
        if path.endswith("/infer") or path.endswith("/predict"):
            response = client.post(path, json=infer_body())
        else:
            response = client.get(path)
    assert response.status_code == 404, response.text
    assert says in response.json()["error"]
    assert job_count(stack) == before


def test_requests_are_counted_by_route_template_and_refusals_by_reason(stack):
    route = "/v2/models/{name}/infer"
    before = stack.metrics()
    with stack.client() as client:
        assert client.post("/v2/models/iris/infer", json=infer_body()).status_code == 200
        assert client.post("/v2/models/iris/infer", json=[1]).status_code == 400
    after = stack.metrics()

    def grown(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert grown("mlops_http_requests_total", route=route, method="POST", status="200") == 1
    assert grown("mlops_http_requests_total", route=route, method="POST", status="400") == 1
    assert grown("mlops_requests_rejected_total", reason="validation") == 1
    assert grown("mlops_jobs_submitted_total", kind="predict") == 1


def test_a_body_too_large_is_413(stack):
    with stack.client() as client:
        response = client.post("/v2/models/iris/infer", content=b" " * (MAX_BODY_BYTES + 1))
    assert response.status_code == 413
    assert "larger than" in response.json()["error"]


# -- tritonclient, as its users call it ------------------------------------------------------------
@pytest.fixture(scope="module")
def triton_client(stack):
    client = triton.InferenceServerClient(url=stack.url.removeprefix("http://"), network_timeout=60)
    yield client
    client.close()


HEADERS = {"X-API-Key": PREDICT_KEY}


def triton_infer(client, rows: np.ndarray, binary: bool = True, version: str = ""):
    inputs = [triton.InferInput("input-0", list(rows.shape), "FP64")]
    inputs[0].set_data_from_numpy(rows, binary_data=binary)
    # a copy: tritonclient adds its own headers to the dict it is given
    return client.infer("iris", inputs, model_version=version, headers=dict(HEADERS))


def test_tritonclient_metadata_and_readiness(stack, triton_client):
    assert triton_client.is_server_live()
    assert triton_client.is_server_ready()
    assert triton_client.is_model_ready("iris", headers=HEADERS)
    assert not triton_client.is_model_ready("penguins", headers=HEADERS)
    metadata = triton_client.get_model_metadata("iris", headers=HEADERS)
    assert metadata["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    assert triton_client.get_server_metadata()["name"] == "two-mlops"
    with pytest.raises(InferenceServerException, match="unknown model"):
        triton_client.get_model_metadata("penguins", headers=HEADERS)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("count", [1, MAX_INSTANCES])
def test_tritonclient_infer_matches_predict(stack, triton_client, binary, count):
    rows = np.asarray(distinct_rows(count), dtype=np.float64)
    result = triton_infer(triton_client, rows, binary)
    with stack.client() as client:
        expected = predict_answer(client, rows.tolist())
    labels = result.as_numpy("label")
    assert labels.shape == (count,)
    assert [v.decode() if isinstance(v, bytes) else v for v in labels] == expected["predictions"]
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (count, 3)
    assert np.allclose(probabilities, expected["probabilities"], atol=1e-9)
    assert result.get_response()["model_version"] == "1"


def test_tritonclient_bad_input_is_an_exception_naming_it(stack, triton_client):
    rows = np.ones((2, 3), dtype=np.float64)
    with pytest.raises(InferenceServerException, match=r"must have shape \[n, 4\]") as info:
        triton_infer(triton_client, rows)
    assert info.value.status() == "400"


# -- version pinning (trains version 2: keep these last among the shared-stack tests) ----------
def test_a_version_in_the_path_pins_it(two_versions, triton_client):
    stack = two_versions
    with stack.client() as client:
        answers = {
            v: client.post(f"/v2/models/iris/versions/{v}/infer", json=infer_body())
            for v in ("1", "2")
        }
        latest = client.post("/v2/models/iris/infer", json=infer_body())
        production = client.get("/models/iris").json()["production_version"]
        metadata = client.get("/v2/models/iris/versions/2")
        ready = client.get("/v2/models/iris/versions/2/ready")
    for version, response in answers.items():
        assert response.status_code == 200, response.text
        assert response.json()["model_version"] == version
    assert latest.json()["model_version"] == str(production)
    assert metadata.json()["versions"] == ["1", "2"]
    assert ready.json() == {"name": "iris", "ready": True}
    pinned = triton_infer(triton_client, np.asarray(ROWS), version="1")
    assert pinned.get_response()["model_version"] == "1"


# -- a stack with no worker: not ready, 504 naming the job, then 429 ------------------------------
def test_without_a_worker_not_ready_then_504_then_429(tmp_path):
    stack = Stack(tmp_path, MLOPS_API__MAX_WAIT_SECONDS="1", MLOPS_API__MAX_QUEUE_DEPTH="1")

    def start(s: Stack) -> None:
        s.start_redis()
        assert s.train().returncode == 0
        s.start_gateway()

    with running(stack, start), stack.client() as client:
        ready = client.get("/v2/health/ready")
        model_ready = client.get("/v2/models/iris/ready")
        slow = client.post("/v2/models/iris/infer", json=infer_body())
        job_id = slow.json()["error"].split()[1]
        job = client.get(f"/jobs/{job_id}")

        def refused() -> bool:
            response = client.post("/v2/models/iris/infer", json=infer_body())
            assert response.status_code in (429, 504), response.text
            return response.status_code == 429

        wait_until(refused, 10, "backpressure")
        busy = client.post("/v2/models/iris/infer", json=infer_body())
    assert ready.status_code == 503
    assert ready.json()["ready"] is False
    assert "no live worker consumes the 'predict' queue" in ready.json()["error"]
    assert model_ready.status_code == 503
    assert model_ready.json()["ready"] is False
    assert slow.status_code == 504, slow.text
    assert f"GET /jobs/{job_id}" in slow.json()["error"]
    assert job.json()["status"] == "PENDING"
    assert busy.status_code == 429
    assert busy.headers["retry-after"]
    assert "retry later" in busy.json()["error"]

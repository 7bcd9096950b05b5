"""Two models in one service (issue 13): trained, served and retrained side by side, under load,
with no cross-talk; promote and rollback of one leave the other as it was."""

from __future__ import annotations

import asyncio
import csv
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from core.settings import get_settings
from scripts.processes import ROOT, wait_until
from tests.factories import store_at, total
from tests.integration.stack import PREDICT_KEY, SEED_BODY, Stack, poll_job, running
from training.serialization import load_model

pytestmark = pytest.mark.integration

PENGUINS_CSV = ROOT / "tests" / "data" / "penguins_small.csv"
TWO_MODELS = {
    # iris: the default model, from [training]; penguins: a [models.penguins] table set by env
    "MLOPS_MODELS__PENGUINS__TRAINER": "csv",
    "MLOPS_MODELS__PENGUINS__CSV": f'@json {{"path": "{PENGUINS_CSV}", "target": "species"}}',
}
IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
IRIS_CLASSES = {"setosa", "versicolor", "virginica"}


def penguin_rows() -> tuple[list[str], list[list[float]]]:
    with PENGUINS_CSV.open() as f:
        table = list(csv.DictReader(f))
    features = [name for name in table[0] if name != "species"]
    return features, [[float(row[name]) for name in features] for row in table]


PENGUIN_FEATURES, PENGUIN_ROWS = penguin_rows()


def start_two(stack: Stack) -> None:
    stack.start_redis()
    for model in ("iris", "penguins"):
        trained = stack.train("train", "--model", model)
        assert trained.returncode == 0, trained.stderr
    stack.start_worker("worker0", concurrency=2)  # every queue: both models, and training
    stack.start_worker("predictor", queues="predict")  # keeps serving while worker0 trains
    stack.start_gateway()
    stack.wait_ready()


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    with running(Stack(tmp_path_factory.mktemp("two"), **TWO_MODELS), start_two) as started:
        yield started


def local(stack: Stack, model: str, version: int):
    return load_model(store_at(stack.artifacts, model), version, get_settings())[1]


def test_both_models_are_listed_with_their_own_versions(two):
    with two.client() as client:
        listed = {m["name"]: m for m in client.get("/models").json()["models"]}
        assert listed["iris"]["production_version"] == 1
        assert listed["iris"]["default"] is True
        assert listed["penguins"]["production_version"] == 1
        assert listed["penguins"]["trainer"] == "csv"
        penguins = client.get("/models/penguins").json()
        ready = client.get("/ready").json()
    assert [v["version"] for v in penguins["versions"]] == [1]
    assert {m["name"]: m["version"] for m in ready["models"]} == {"iris": 1, "penguins": 1}


def test_under_load_each_answer_comes_from_the_model_it_names(two):
    """Both models at once through one worker node: every answer is its own model's (the
    classes, the model name and the predictions the artifact gives locally)."""
    iris, penguins = local(two, "iris", 1), local(two, "penguins", 1)
    count = 150
    iris_rows = [
        [4.3 + (i % 36) * 0.1, 2.0 + (i % 24) * 0.1, 1.0 + (i % 60) * 0.1, 0.1]
        for i in range(count)
    ]
    penguin_rows = [PENGUIN_ROWS[i % len(PENGUIN_ROWS)] for i in range(count)]

    async def one(client: httpx.AsyncClient, path: str, features: list[str], row) -> dict:
        body = dict(zip(features, row, strict=True))
        response = await client.post(path, params={"wait": 30}, json=body)
        assert response.status_code in (200, 202), response.text
        result = response.json()
        while result["status"] not in ("SUCCESS", "FAILURE"):
            await asyncio.sleep(0.1)
            result = (await client.get(f"/jobs/{result['job_id']}")).json()
        return result

    async def everything() -> tuple[list[dict], list[dict]]:
        async with httpx.AsyncClient(
            base_url=two.url, headers={"X-API-Key": PREDICT_KEY}, timeout=90
        ) as client:
            iris_answers = [one(client, "/predict", IRIS_FEATURES, row) for row in iris_rows]
            penguin_answers = [
                one(client, "/models/penguins/predict", PENGUIN_FEATURES, row)
                for row in penguin_rows
            ]
            found = await asyncio.gather(*iris_answers, *penguin_answers)
            return found[:count], found[count:]

    iris_results, penguin_results = asyncio.run(everything())
    iris_expected = iris.predict(np.asarray(iris_rows)).tolist()
    penguin_expected = penguins.predict(np.asarray(penguin_rows)).tolist()
    for i, result in enumerate(iris_results):
        assert result["status"] == "SUCCESS", result
        assert (result["model_name"], result["model_version"]) == ("iris", 1), result
        assert result["predictions"] == [iris_expected[i]], i
        assert set(result["classes"]) == IRIS_CLASSES
    for i, result in enumerate(penguin_results):
        assert result["status"] == "SUCCESS", result
        assert (result["model_name"], result["model_version"]) == ("penguins", 1), result
        assert result["predictions"] == [penguin_expected[i]], i
        assert set(result["classes"]) == set(penguins.classes_.tolist())
    submitted = two.metrics()
    assert total(submitted, "mlops_jobs_submitted_total", kind="predict", model="penguins") >= count


def test_a_request_for_an_unknown_model_is_404_and_queues_nothing(two):
    with two.client() as client:
        queued = total(two.metrics(), "mlops_jobs_submitted_total", kind="predict")
        answers = [
            client.post("/models/nope/predict", json=SEED_BODY),
            client.get("/models/nope"),
            client.get("/models/nope/1"),
            client.post("/models/penguins/predict", json=SEED_BODY),  # iris rows: wrong model
            client.post("/models/Bad%2Fname/predict", json=SEED_BODY),
        ]
        assert total(two.metrics(), "mlops_jobs_submitted_total", kind="predict") == queued
    assert [a.status_code for a in answers[:3]] == [404, 404, 404], [a.text for a in answers]
    assert "nope" in answers[0].json()["detail"]
    assert answers[3].status_code == 422, answers[3].text  # penguins' features are named
    assert "bill_length_mm" in answers[3].text
    assert answers[4].status_code in (404, 422), answers[4].text


def test_promote_and_rollback_of_one_model_leave_the_other_untouched(two):
    trained = two.train("train", "--model", "penguins", "--force")
    assert trained.returncode == 0, trained.stderr
    with two.admin() as admin:
        versions = [v["version"] for v in admin.get("/models/penguins").json()["versions"]]
        assert versions == [1, 2]
        if admin.get("/models/penguins").json()["production_version"] == 2:
            assert admin.post("/models/penguins/rollback").status_code == 200
        promoted = admin.post("/models/penguins/2/promote")
        assert promoted.status_code == 200, promoted.text

        def penguins_at(version: int) -> bool:
            answer = admin.post(
                "/models/penguins/predict",
                params={"wait": 10},
                json=dict(zip(PENGUIN_FEATURES, PENGUIN_ROWS[0], strict=True)),
            ).json()
            return answer["model_version"] == version

        wait_until(lambda: penguins_at(2), 30, "penguins served from version 2")
        iris = admin.post("/predict", params={"wait": 10}, json=SEED_BODY).json()
        assert (iris["model_name"], iris["model_version"]) == ("iris", 1)
        assert admin.get("/models/iris").json()["production_version"] == 1
        assert admin.get("/models").json()["production_version"] == 1  # the default model's

        rolled = admin.post("/models/penguins/rollback")
        assert rolled.status_code == 200, rolled.text
        wait_until(lambda: penguins_at(1), 30, "penguins served from version 1 again")
        assert admin.get("/models/iris").json()["production_version"] == 1
        assert store_at(two.artifacts, "iris").versions() == [1]
        # The default model's rollback has no previous version: penguins' history is its own.
        assert admin.post("/models/rollback").status_code == 409


class SteadyLoad(threading.Thread):
    """Predictions of both models, one after the other, until stopped: the answers."""

    def __init__(self, stack: Stack):
        super().__init__(daemon=True)
        self.stack, self.answers, self.stopping = stack, [], threading.Event()

    def run(self) -> None:
        iris = SEED_BODY
        penguins = dict(zip(PENGUIN_FEATURES, PENGUIN_ROWS[0], strict=True))
        with self.stack.client() as client:
            while not self.stopping.is_set():
                for model, path, body in (
                    ("iris", "/predict", iris),
                    ("penguins", "/models/penguins/predict", penguins),
                ):
                    response = client.post(path, params={"wait": 20}, json=body)
                    self.answers.append((model, response.status_code, response.json()))

    def stop(self) -> list:
        self.stopping.set()
        self.join(60)
        return self.answers


def test_two_models_retrain_at_once_each_once_under_load(two):
    """Single flight per model: two models train side by side while both serve, a second
    request for a model joins its run, each retrain writes a version of its own model only,
    and every prediction made meanwhile comes from the model it names."""
    before = {m: store_at(two.artifacts, m).versions() for m in ("iris", "penguins")}
    load = SteadyLoad(two)
    load.start()
    with two.admin() as admin:
        with ThreadPoolExecutor(4) as pool:
            answers = list(
                pool.map(
                    admin.post,
                    [  # the same data: forced, to make new versions
                        "/retrain?force=true",
                        "/models/penguins/retrain?force=true",
                        "/models/iris/retrain?force=true",
                        "/models/penguins/retrain?force=true",
                    ],
                )
            )
        assert [a.status_code for a in answers] == [202] * 4, [a.text for a in answers]
        ids = [a.json()["job_id"] for a in answers]
        assert ids[0] == ids[2] and ids[1] == ids[3] and ids[0] != ids[1]
        results = {
            model: poll_job(admin, ids[i], 180) for model, i in (("iris", 0), ("penguins", 1))
        }
    answers = load.stop()
    assert len(answers) >= 10, len(answers)
    penguin_classes = set(local(two, "penguins", 1).classes_.tolist())
    for model, status, answer in answers:
        assert status == 200, answer
        assert answer["status"] == "SUCCESS" and answer["model_name"] == model, answer
        assert set(answer["classes"]) == (IRIS_CLASSES if model == "iris" else penguin_classes)
    for model, result in results.items():
        assert result["status"] == "SUCCESS", result
        assert result["result"]["model_name"] == model, result
        versions = store_at(two.artifacts, model).versions()
        assert versions == [*before[model], max(before[model]) + 1], (model, versions)

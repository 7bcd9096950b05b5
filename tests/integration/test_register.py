"""Bring your own model on a running service: `python -m training register` a pipeline fitted
in the test (as in a notebook) under a model the settings do not name; the gateway finds it in
the store and the worker serves it. And a worker whose settings name an unknown trainer does
not start."""

from __future__ import annotations

import time

import httpx
import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from core.settings import ROOT
from scripts.processes import wait_until
from tests.integration.stack import ADMIN_KEY
from training.trainers.tabular import CsvTrainer

pytestmark = pytest.mark.integration

PENGUINS = ROOT / "tests" / "data" / "penguins_small.csv"
MODEL = "penguins-own"
DISCOVERY_BOUND = 10.0  # seconds: the gateway lists the store every 5 s (catalog.py)


@pytest.fixture(scope="module")
def pipeline():
    data = CsvTrainer(path=str(PENGUINS), target="species").load_data()
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(data.X, data.y), data


def predict(client: httpx.Client, rows: list[list[float]]) -> httpx.Response:
    return client.post(f"/models/{MODEL}/predict", params={"wait": 10}, json={"instances": rows})


def test_a_registered_pipeline_is_served_by_the_running_service(stack, tmp_path, pipeline):
    model, data = pipeline
    path = tmp_path / "notebook.joblib"
    joblib.dump(model, path)
    with stack.client() as client:
        assert predict(client, data.X[:1].tolist()).status_code == 404  # not yet
        began = time.monotonic()
        registered = stack.train(
            *["register", str(path), "--model", MODEL, "--features", ",".join(data.feature_names)],
            *["--eval", str(PENGUINS), "--target", "species"],
        )
        assert registered.returncode == 0, registered.stderr
        assert registered.stdout.startswith(f"{MODEL} v1 promoted"), registered.stdout
        started = time.monotonic()
        wait_until(
            lambda: predict(client, data.X[:1].tolist()).status_code == 200,
            DISCOVERY_BOUND,
            f"POST /models/{MODEL}/predict",
        )
        discovered = time.monotonic() - started
        rows = data.X[::7].tolist()  # every species, 18 rows
        answer = predict(client, rows).json()
        listing = client.get("/models").json()
    assert answer["status"] == "SUCCESS", answer
    assert (answer["model_name"], answer["model_version"]) == (MODEL, 1)
    assert answer["predictions"] == model.predict(np.asarray(rows)).tolist()
    assert np.allclose(answer["probabilities"], model.predict_proba(np.asarray(rows)), atol=1e-6)
    assert answer["classes"] == model.classes_.tolist()
    listed = {m["name"]: m for m in listing["models"]}
    assert listed[MODEL]["production_version"] == 1 and listed[MODEL]["queue"] == "predict"
    assert listed["iris"]["production_version"] == 1  # the default model is untouched
    print(  # noqa: T201 - the figure for the report (pytest -s)
        f"register took {started - began:.1f} s; served {discovered:.1f} s after it returned"
    )
    with stack.client(ADMIN_KEY) as admin:
        assert admin.post(f"/models/{MODEL}/retrain").status_code == 409  # nothing to train


def test_a_worker_whose_settings_name_an_unknown_trainer_stops_naming_the_model(stack):
    worker = stack.start_worker("bad-trainer", wait=False, MLOPS_MODELS__PENGUINS__TRAINER="nope")
    wait_until(lambda: not worker.alive(), 60, "the worker to exit")
    assert worker.returncode() != 0
    assert "models.penguins.trainer: unknown trainer 'nope'" in worker.output()
    assert "known trainers: csv, iris" in worker.output()

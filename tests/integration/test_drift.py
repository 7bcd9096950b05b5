"""Drift monitoring end to end: real redis-server, worker, beat and gateway.

iris v1 is trained on the bundled data; clients then send inputs with longer, wider petals.
Their predictions go into the prediction log (tests/factories.py writes them, so the test
chooses exactly which rows the check sees), a check runs on the predict queue, and the drift
shows in GET /models/iris/monitoring, the gateway's metrics and the model card; with
``retrain_on_drift`` the check asks for a retrain, which says "nothing new to learn" as no
labels came (test_closed_loop.py is the loop with labels). A second
model (``old``) stands for a version trained before monitoring: no reference profile, a clear
status, never a 500; beat checks it every second.
"""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_iris

from scripts.processes import wait_until
from tests.factories import store_at, total, value
from tests.integration.stack import Stack, poll_job, running
from training.cards import write_card

pytestmark = pytest.mark.integration

ENV = {
    "MLOPS_MODELS__OLD__TRAINER": "iris",
    # iris is checked when a test asks (Stack.check_drift); beat checks `old` every second
    "MLOPS_MONITORING__INTERVAL_SECONDS": "3600",
    "MLOPS_MODELS__OLD__MONITORING": '@json {"interval_seconds": 1}',
    "MLOPS_MONITORING__WINDOW": "150",
    "MLOPS_MONITORING__RETRAIN_ON_DRIFT": "true",
}
SHIFTED = (load_iris().data + np.array([0.0, 0.0, 3.0, 1.5])).round(1).tolist()


@pytest.fixture(scope="module")
def drift(tmp_path_factory):
    def start(stack: Stack) -> None:
        stack.start_redis()
        for model in ("iris", "old"):
            trained = stack.train("train", "--model", model)
            assert trained.returncode == 0, trained.stderr
        # as a version trained before drift monitoring existed, card included
        old = store_at(stack.artifacts, "old")
        old.update_metadata(1, reference_profile=None)
        write_card(old, 1)
        stack.start_worker("worker0")
        stack.start_gateway()
        stack.wait_ready()

    with running(Stack(tmp_path_factory.mktemp("drift"), **ENV), start) as stack:
        yield stack


def predict(client: httpx.Client, rows: list) -> list[str]:
    answered = client.post("/predict?wait=20", json={"instances": rows})
    assert answered.status_code == 200, answered.text
    return answered.json()["predictions"]


def test_a_version_without_a_profile_answers_no_profile_checked_by_beat(drift):
    with drift.client() as client:
        first = client.get("/models/old/monitoring")
        assert first.status_code == 200, first.text
        assert (first.json()["status"], first.json()["monitored"]) == ("no_profile", True)
        drift.start_beat()
        body: dict = {}

        def checked_twice() -> bool:  # beat's schedule for `old` runs every second
            body.update(client.get("/models/old/monitoring").json())
            return (body["latest"] or {}).get("checked_at", 0) > time.time() - 3

        wait_until(checked_twice, 60, "beat's drift check of old")
        assert body["status"] == "no_profile" and body["latest"]["version"] == 1
        assert "no reference profile" in body["latest"]["detail"]
        card = client.get("/models/old/1/card")
        assert card.status_code == 200 and "No reference profile" in card.text
        assert "<b>no_profile</b>" in card.text
        assert client.get("/models/nosuch/monitoring").status_code == 404


def test_shifted_inputs_drift_and_trigger_a_retrain_that_says_so(drift):
    with drift.client() as client, drift.admin() as admin:
        assert client.get("/models/iris/monitoring").json()["status"] == "pending"
        drift.log_predictions("iris", 1, SHIFTED, predict(client, SHIFTED))
        body = drift.check_drift("iris")
        assert body["status"] == "drift" and body["production_version"] == 1
        latest = body["latest"]
        assert latest["rows"] == 150 and latest["version"] == 1
        assert {"petal_length", "petal_width"} <= set(latest["drifted_features"])
        by_name = {f["name"]: f for f in latest["features"]}
        assert by_name["petal_length"]["psi"] > 1 and by_name["petal_length"]["ks_p_value"] < 1e-6

        # the drift trigger: one retrain, through the single flight, that records why
        retrain = latest["retrain"]
        assert retrain["requested"] and not retrain["joined"]
        done = poll_job(admin, retrain["job_id"], timeout=120)
        assert done["status"] == "SUCCESS", done
        # No labelled feedback came with these inputs: the same data would make the same
        # model, so the run says so (test_closed_loop.py sends the labels and gets a v2).
        outcome = done["result"]
        assert (outcome["decision"], outcome["trigger"]) == ("skipped", "drift"), outcome
        assert "nothing new to learn" in outcome["reason"]
        assert outcome["version"] is None

        # the metrics (the gateway reads the stored check every 5 s)
        def exported() -> bool:
            found = drift.metrics()
            return value(found, "mlops_drift_detected", model="iris", version="1") == 1

        wait_until(exported, 30, "the drift gauges")
        found = drift.metrics()
        psi = value(found, "mlops_drift_psi", model="iris", version="1", feature="petal_length")
        assert psi == pytest.approx(by_name["petal_length"]["psi"])
        assert total(found, "mlops_drift_ks_statistic", model="iris") > 0
        assert value(found, "mlops_drift_class_psi", model="iris", version="1") is not None

        # the card of v1 shows its check
        card = client.get("/models/iris/1/card").text
        assert "Drift (latest check)" in card and "<b>drift</b>" in card

        # v1 still serves: nothing was promoted
        assert client.get("/version").json()["model_version"] == 1
        assert len(predict(client, SHIFTED[:3])) == 3

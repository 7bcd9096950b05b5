"""The closed loop end to end (issue 15): real redis-server, worker, beat and gateway over HTTP.

iris v1 is trained on the bundled data. Clients then send flowers shifted by 4 cm on every
measure (v1 calls nearly all of them one class) and, by job id, their true labels. Beat's drift
check sees the shift (GET /models/iris/monitoring, the gateway's metrics; v1's live quality on
the labels falls below its evaluation metric) and asks for a retrain. That run learns the base
data and the labelled feedback, beats v1 on the most recent labelled rows, is promoted and
serves, and gets the shifted flowers right far more often than v1. A background load of
predictions runs throughout and none of it fails.
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_iris

from scripts.processes import wait_until
from tests.factories import value
from tests.integration.stack import LoadLoop, Stack, poll_job, running

pytestmark = pytest.mark.integration

ENV = {
    # beat checks iris every 6 s: longer than the gateway's 5 s read of the stored check, so
    # v1's drift shows in /metrics before the check of v2 replaces it
    "MLOPS_MONITORING__INTERVAL_SECONDS": "6",
    "MLOPS_MONITORING__WINDOW": "200",
    "MLOPS_MONITORING__RETRAIN_ON_DRIFT": "true",
    "MLOPS_PREDICTION_LOG__FLUSH_SECONDS": "1",
}
IRIS = load_iris()
SHIFT = 4.0  # cm added to every measure: outside what v1 learnt, for every feature
SHIFTED = (IRIS.data + SHIFT).round(1).tolist()
TRUTH = [str(IRIS.target_names[t]) for t in IRIS.target]
JOB_ROWS = 10  # rows per predict job (and per feedback item: one label per row)


def start(stack: Stack) -> None:
    """Redis, iris v1 on its base data, one worker for every queue, the gateway; beat later."""
    stack.start_redis()
    trained = stack.train("train", "--model", "iris")
    assert trained.returncode == 0, trained.stderr
    stack.start_worker("worker0", concurrency=2)
    stack.start_gateway()
    stack.wait_ready()


@pytest.fixture
def loop(tmp_path):
    with running(Stack(tmp_path / "loop", **ENV), start) as stack:
        yield stack


def predict_shifted(client: httpx.Client) -> tuple[list[str], list[str], set[int]]:
    """Every shifted flower through POST /predict: the job ids, the predictions, the versions."""
    jobs, predictions, versions = [], [], set()
    for first in range(0, len(SHIFTED), JOB_ROWS):
        answer = client.post(
            "/predict", params={"wait": 20}, json={"instances": SHIFTED[first : first + JOB_ROWS]}
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["status"] == "SUCCESS", body
        jobs.append(body["job_id"])
        predictions += body["predictions"]
        versions.add(body["model_version"])
    return jobs, predictions, versions


def accuracy(predictions: list[str]) -> float:
    return float(np.mean([p == t for p, t in zip(predictions, TRUTH, strict=True)]))


def test_drift_on_labelled_shifted_inputs_retrains_promotes_and_serves_a_better_version(loop):
    threshold = 0.2  # settings.toml monitoring.psi_threshold
    with loop.client() as client, loop.admin() as admin, LoadLoop(loop, interval=0.1) as load:
        # 1-2. v1 serves the shifted flowers; their true labels come back by job id
        jobs, v1_predictions, versions = predict_shifted(client)
        assert versions == {1}
        v1_accuracy = accuracy(v1_predictions)
        labels = [
            {"job_id": job, "label": TRUTH[i * JOB_ROWS : (i + 1) * JOB_ROWS]}
            for i, job in enumerate(jobs)
        ]
        sent = client.post("/feedback", json={"items": labels})
        assert sent.status_code == 200, sent.text
        assert sent.json()["recorded"] == len(SHIFTED)
        v1_meta = client.get("/models/iris/1").json()
        evaluated = v1_meta["metrics"]["accuracy"]
        assert v1_accuracy < evaluated - 0.3, (v1_accuracy, evaluated)

        # 3. beat's drift check sees it: the monitoring endpoint and the gateway's metrics
        loop.start_beat()
        seen: dict = {}

        def drift_seen() -> bool:
            if "monitoring" not in seen:
                body = client.get("/models/iris/monitoring").json()
                latest = body["latest"] or {}
                if latest.get("version") == 1 and latest.get("status") == "drift":
                    seen["monitoring"] = body
            if "metrics" not in seen:
                found = loop.metrics()
                if value(found, "mlops_drift_detected", model="iris", version="1") == 1:
                    seen["metrics"] = found
            return {"monitoring", "metrics"} <= seen.keys()

        wait_until(drift_seen, 30, "v1's drift in /monitoring and /metrics", interval=0.2)
        checked = seen["monitoring"]["latest"]
        assert checked["rows"] >= 100  # min_rows: shifted flowers and the load's setosas
        assert set(checked["drifted_features"]) == {f["name"] for f in v1_meta["features"]}
        for feature in checked["drifted_features"]:
            psi = value(
                seen["metrics"], "mlops_drift_psi", model="iris", version="1", feature=feature
            )
            assert psi is not None and psi > threshold, (feature, psi)

        # ...and v1's live quality on the labelled feedback is below its evaluation metric
        [v1] = [v for v in client.get("/models/iris").json()["versions"] if v["version"] == 1]
        assert v1["live_quality"]["labelled"] == len(SHIFTED)
        assert v1["live_quality"]["accuracy"] == pytest.approx(v1_accuracy)
        assert v1["live_quality"]["accuracy"] < evaluated

        def live_quality_exported() -> bool:
            labels = {"model": "iris", "version": "1", "metric": "accuracy"}
            return value(loop.metrics(), "mlops_live_quality", **labels) == pytest.approx(
                v1_accuracy
            )

        wait_until(live_quality_exported, 15, "mlops_live_quality of iris v1")

        # 4. the check asked for a retrain, which learns the feedback and wins the gate
        retrain = checked["retrain"]
        assert retrain and retrain["requested"], checked
        done = poll_job(admin, retrain["job_id"], timeout=60)
        assert done["status"] == "SUCCESS", done
        assert done["result"]["decision"] == "promoted", done["result"]
        version = done["result"]["version"]
        assert version == 2
        meta = client.get(f"/models/iris/{version}").json()
        assert meta["trigger"] == "drift"
        assert meta["trigger_detail"]["version"] == 1
        feedback = meta["data"]["feedback"]
        assert feedback["rows"] == len(SHIFTED)
        assert len(feedback["fingerprint"]) == 64
        assert meta["data"]["base"]["rows"] == len(IRIS.data)
        gate = meta["gate"]
        assert gate["decision"] == "promoted" and gate["decided_on"] == "recent feedback", gate
        assert gate["production_version"] == 1 and gate["feedback_rows"] > 0
        assert gate["feedback_candidate"] > gate["feedback_production"], gate

        # 5. v2 serves, and gets the shifted flowers right far more often than v1
        def v2_serves() -> bool:
            answer = client.post("/predict", params={"wait": 20}, json={"instances": SHIFTED[:1]})
            return answer.json()["model_version"] == 2

        wait_until(v2_serves, 30, "v2 serving", interval=0.2)
        _, v2_predictions, versions = predict_shifted(client)
        assert versions == {2}
        v2_accuracy = accuracy(v2_predictions)
        assert v2_accuracy >= v1_accuracy + 0.4, (v1_accuracy, v2_accuracy)

    # 6. the background load never failed
    assert set(load.statuses) == {202}, load.statuses
    assert load.accepted, "the load loop had no job accepted"
    with loop.client() as client:
        for job_id in load.accepted:
            result = poll_job(client, job_id)
            assert result["status"] == "SUCCESS", result

"""Feedback end to end (issue 15): real redis-server, a real worker, real HTTP. Labels join the
logged predictions, bad ones are refused with the field, a flood gets 429, the labelled data
reaches a retrain that records its fingerprint, the same data again is "nothing new to
learn", and enough new labels trigger a retrain on their own."""

from __future__ import annotations

import time

import httpx
import orjson
import pytest

from scripts.processes import wait_until
from tests.factories import store_at, total, value
from tests.integration.stack import OTHER_PREDICT_KEY, SEED_BODY, Stack, poll_job, running
from tests.integration.test_many_models import PENGUIN_FEATURES, PENGUIN_ROWS, TWO_MODELS

pytestmark = pytest.mark.integration

IRIS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
LABELS_TRIGGER = 8  # penguins retrain after this many new labels
FLOOD_PENDING = 3  # the flood model refuses feedback beyond this many labels not yet stored
ENV = {
    **TWO_MODELS,
    "MLOPS_PREDICTION_LOG__FLUSH_SECONDS": "1",
    "MLOPS_MODELS__PENGUINS__FEEDBACK__RETRAIN_AFTER_LABELS": str(LABELS_TRIGGER),
    # a third model, another iris, whose labels pile up: the workers' flusher is per model,
    # but this one's pending cap is tiny
    "MLOPS_MODELS__FLOOD__TRAINER": "iris",
    "MLOPS_MODELS__FLOOD__FEEDBACK__MAX_PENDING": str(FLOOD_PENDING),
}


def start(stack: Stack) -> None:
    stack.start_redis()
    for model in ("iris", "penguins", "flood"):
        trained = stack.train("train", "--model", model)
        assert trained.returncode == 0, trained.stderr
    stack.start_worker("worker0", concurrency=2)  # every queue: predictions and training
    stack.start_gateway()
    stack.wait_ready()


@pytest.fixture(scope="module")
def fb(tmp_path_factory):
    with running(Stack(tmp_path_factory.mktemp("feedback"), **ENV), start) as started:
        yield started


def predict(client: httpx.Client, path: str, body: dict) -> dict:
    answer = client.post(path, params={"wait": 20}, json=body)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["status"] == "SUCCESS", result
    return result


def iris_row(row: list[float], request_id: str | None = None) -> dict:
    return {**dict(zip(IRIS, row, strict=True)), "request_id": request_id}


def shifted(i: int) -> list[float]:
    """Flowers unlike the training data (petals of 9 cm): v1 calls them virginica."""
    return [7.5 + (i % 10) / 10, 3.0, 9.0 + (i % 7) / 10, 3.0 + (i % 5) / 10]


def test_a_label_joins_its_prediction_and_a_repeat_counts_once(fb):
    with fb.client() as client:
        job = predict(client, "/predict", iris_row(SEED_BODY_ROW, "order-1"))
        first = client.post("/feedback", json={"job_id": job["job_id"], "label": "setosa"})
        again = client.post("/feedback", json={"request_id": "order-1", "label": "setosa"})
        other = client.post("/feedback", json={"job_id": job["job_id"], "label": "virginica"})
        model = client.get("/models/iris").json()
    assert first.status_code == 200, first.text
    assert first.json()["recorded"] == 1
    assert first.json()["items"] == [
        {"job_id": job["job_id"], "request_id": "order-1", "model_version": 1, "status": "recorded"}
    ]
    assert again.status_code == 200 and again.json()["repeats"] == 1, again.text
    assert again.json()["recorded"] == 0
    assert other.status_code == 409 and other.json()["reason"] == "label_conflict", other.text
    [v1] = [v for v in model["versions"] if v["version"] == 1]
    assert v1["live_quality"]["labelled"] >= 1
    assert model["metric"] == "accuracy"
    assert value(fb.metrics(), "mlops_feedback_labels_total", model="iris") >= 1

    def live_quality_exported() -> bool:
        labels = {"model": "iris", "version": "1", "metric": "accuracy"}
        return value(fb.metrics(), "mlops_live_quality", **labels) is not None

    wait_until(live_quality_exported, 15, "mlops_live_quality of iris v1")


SEED_BODY_ROW = [SEED_BODY[name] for name in IRIS]


MISSING = {"job_id": "no-such-job", "label": "setosa"}


def test_unknown_and_other_keys_ids_are_404_naming_them(fb):
    with fb.client() as client:
        job = predict(client, "/predict", iris_row(SEED_BODY_ROW))
        unknown = client.post(
            "/feedback",
            json={"items": [{"job_id": job["job_id"], "label": "setosa"}, MISSING]},
        )
    with fb.client(OTHER_PREDICT_KEY) as other:
        not_theirs = other.post("/feedback", json={"job_id": job["job_id"], "label": "setosa"})
    assert unknown.status_code == 404, unknown.text
    assert unknown.json()["reason"] == "prediction_not_found"
    assert unknown.json()["missing"] == [{"job_id": "no-such-job"}]
    assert not_theirs.status_code == 404, not_theirs.text
    with fb.client() as client:  # nothing of the refused request was recorded
        ok = client.post("/feedback", json={"job_id": job["job_id"], "label": "versicolor"})
    assert ok.status_code == 200 and ok.json()["recorded"] == 1, ok.text


JSON = {"Content-Type": "application/json"}


def test_bad_labels_and_bodies_are_4xx_at_their_field_never_500(fb):
    with fb.client() as client:
        job = predict(client, "/predict", iris_row(SEED_BODY_ROW))["job_id"]
        answers = {
            "unknown class": client.post("/feedback", json={"job_id": job, "label": "rose"}),
            "wrong type": client.post("/feedback", json={"job_id": job, "label": 2}),
            "in a batch": client.post(
                "/feedback",
                json={"items": [{"job_id": job, "label": "setosa"}, {"job_id": job, "label": []}]},
            ),
            "no id": client.post("/feedback", json={"label": "setosa"}),
            "not json": client.post("/feedback", content=b"{", headers=JSON),
            "text": client.post("/feedback", content=b"x", headers={"Content-Type": "text/plain"}),
            "unknown model": client.post("/models/nope/feedback", json={"job_id": job, "label": 1}),
        }
    with fb.client(key=None) as anonymous:
        answers["no key"] = anonymous.post("/feedback", json={"job_id": job, "label": "setosa"})
    codes = {name: answer.status_code for name, answer in answers.items()}
    expected = {"unknown class": 422, "wrong type": 422, "in a batch": 422, "no id": 422}
    expected |= {"not json": 422, "text": 415, "unknown model": 404, "no key": 401}
    assert codes == expected, {name: answer.text for name, answer in answers.items()}
    assert answers["unknown class"].json()["detail"][0]["loc"] == ["body", "label"]
    assert answers["unknown class"].json()["detail"][0]["type"] == "label_unknown"
    assert answers["wrong type"].json()["detail"][0]["type"] == "label_type"
    locs = [e["loc"] for e in answers["in a batch"].json()["detail"]]
    assert ["body", "items", 1, "label"] in [loc[:4] for loc in locs]
    for answer in answers.values():
        assert "reason" in answer.json()


LABEL = "virginica"


def test_a_flood_of_feedback_is_refused_429_and_nothing_is_lost(fb):
    """The flood model takes FLOOD_PENDING labels not yet flushed to the store: the request
    after them gets 429 with Retry-After (unless the flusher just moved them: then again)."""
    with fb.client() as client:
        jobs = [
            predict(client, "/models/flood/predict", iris_row(shifted(i)))["job_id"]
            for i in range(FLOOD_PENDING * 6)
        ]
        refused, recorded = None, []
        for start in range(0, len(jobs), FLOOD_PENDING + 1):
            burst = jobs[start : start + FLOOD_PENDING + 1]
            head, last = burst[:-1], burst[-1]
            items = [{"job_id": j, "label": LABEL} for j in head]
            done = client.post("/models/flood/feedback", json=items)
            assert done.status_code in (200, 429), done.text
            if done.status_code == 200:
                recorded += head
            answer = client.post("/models/flood/feedback", json={"job_id": last, "label": LABEL})
            if answer.status_code == 429:
                refused = (answer, last)
                break
            assert answer.status_code == 200, answer.text
            recorded.append(last)
    assert refused is not None, "no 429 in six bursts"
    answer, last = refused
    assert answer.json()["reason"] == "backpressure" and answer.headers["Retry-After"]
    assert "max_pending" in answer.json()["detail"]
    # nothing lost: every recorded label reaches the store; the refused one is not there
    store = store_at(fb.artifacts, "flood")

    def stored() -> set:
        return {
            orjson.loads(line)["job"]
            for path in store.list_data("feedback/")
            for line in store.read_data(path).splitlines()
        }

    wait_until(lambda: set(recorded) <= stored(), 30, "the flood's labels in the store")
    assert last not in stored()
    with fb.client() as client:  # once flushed, feedback is taken again
        later = client.post("/models/flood/feedback", json={"job_id": last, "label": LABEL})
    assert later.status_code == 200, later.text


def test_the_flusher_writes_the_log_and_the_labels_as_dated_files(fb):
    with fb.client() as client:
        job = predict(client, "/predict", iris_row(SEED_BODY_ROW))["job_id"]
        assert client.post("/feedback", json={"job_id": job, "label": "setosa"}).status_code == 200
    store = store_at(fb.artifacts, "iris")
    day = time.strftime("%Y-%m-%d", time.gmtime())

    def written(kind: str) -> bool:
        return any(
            orjson.loads(line)["job"] == job
            for path in store.list_data(f"{kind}/{day}/")
            for line in store.read_data(path).splitlines()
        )

    wait_until(lambda: written("predictions") and written("feedback"), 30, "dated files")

    def card() -> str:
        return store.read_file(1, "card.html").decode()

    wait_until(lambda: "No labelled predictions yet" not in card(), 30, "the card's live quality")
    assert "Live quality" in card() and "labelled predictions in the window" in card()


def test_labelled_data_reaches_a_retrain_that_records_its_fingerprint(fb):
    """Shifted flowers labelled setosa: the retrain learns them (its data version counts
    them, with their fingerprint), beats v1 on them and is promoted; the same data again is
    nothing new to learn."""
    with fb.client() as client:
        jobs = [predict(client, "/predict", iris_row(shifted(i)))["job_id"] for i in range(120)]
        done = client.post(
            "/feedback", json={"items": [{"job_id": j, "label": "setosa"} for j in jobs]}
        )
        assert done.status_code == 200 and done.json()["recorded"] == 120, done.text
    labelled = int(fb.redis.client().get("mlops:labels:iris:count"))
    with fb.admin() as admin:
        first = poll_job(admin, admin.post("/retrain").json()["job_id"], timeout=180)
        assert first["status"] == "SUCCESS", first
        result = first["result"]
        assert result["decision"] == "promoted", result
        meta = admin.get(f"/models/iris/{result['version']}").json()
        again = poll_job(admin, admin.post("/retrain").json()["job_id"], timeout=180)
    assert meta["trigger"] == "manual"
    feedback = meta["data"]["feedback"]
    assert feedback["rows"] == labelled >= 120
    assert len(feedback["fingerprint"]) == 64 and feedback["until"]
    assert meta["data"]["base"]["rows"] == 150
    assert meta["gate"]["decided_on"] == "recent feedback", meta["gate"]
    assert meta["gate"]["feedback_production"] < meta["gate"]["feedback_candidate"]
    assert again["status"] == "SUCCESS", again
    assert again["result"]["decision"] == "skipped"
    assert again["result"]["reason"].startswith("nothing new to learn")
    assert "nothing new to learn" in fb.services["worker0"].output()
    retrains = total(fb.metrics(), "mlops_jobs_submitted_total", kind="train", model="iris")
    assert retrains >= 2


def test_enough_new_labels_trigger_a_retrain(fb):
    with fb.client() as client:
        bodies = [dict(zip(PENGUIN_FEATURES, row, strict=True)) for row in PENGUIN_ROWS]
        jobs = [predict(client, "/models/penguins/predict", b) for b in bodies[:LABELS_TRIGGER]]
        labels = [{"job_id": j["job_id"], "label": j["predictions"][0]} for j in jobs]
        few = client.post("/models/penguins/feedback", json=labels[:-1])
        enough = client.post("/models/penguins/feedback", json=labels[-1])
    assert few.status_code == 200 and few.json().get("retrain") is None, few.text
    assert enough.status_code == 200, enough.text
    retrain = enough.json()["retrain"]
    assert retrain["trigger"] == "labels" and retrain["joined"] is False
    with fb.admin() as admin:
        job = poll_job(admin, retrain["job_id"], timeout=180)
        assert job["status"] == "SUCCESS", job
        assert job["requested_by"] == "labels trigger"
        version = job["result"]["version"]
        meta = admin.get(f"/models/penguins/{version}").json()
    assert meta["trigger"] == "labels"
    assert meta["data"]["feedback"]["rows"] == LABELS_TRIGGER

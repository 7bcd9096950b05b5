"""workers/monitoring.py: one drift check on a real store and an in-memory Redis, its statuses,
what it reads of the prediction log, what it stores, and the drift trigger."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from sklearn.datasets import load_iris

from core.messages import MONITOR_TASK, TRAIN_QUEUE
from core.monitoring import DriftResult, drift_retrain_key, monitoring_key
from core.settings import get_settings
from core.single_flight import lock_key
from core.store import open_store
from tests.factories import decode_message, log_predictions, settings_with
from training.pipeline import run_training
from workers import tasks as tasks_module
from workers.celery_app import create_app
from workers.monitoring import check_drift, maybe_retrain, recent_rows, run_monitoring

IRIS = load_iris().data.tolist()  # 150 rows: the 120 v1 is trained on and 30 more
SHIFTED = (np.asarray(IRIS) + np.array([0.0, 0.0, 3.0, 1.5])).tolist()  # longer, wider petals
LABELS = load_iris().target_names[load_iris().target].tolist()  # what v1 mostly predicts


def cfg(monkeypatch=None, **changes):
    settings = settings_with(monkeypatch, **changes) if monkeypatch else get_settings()
    return settings.model("iris").monitoring


@pytest.fixture
def store():
    run_training(get_settings())
    return open_store(get_settings())


def log(client, rows, version=1, outputs=None):
    log_predictions(client, "iris", version, rows, outputs)


def test_no_production_version(redis_client):
    result = check_drift(redis_client, open_store(get_settings()), cfg())
    assert (result.status, result.version) == ("no_production_model", None)


def test_a_version_without_a_profile_says_so(redis_client, store):
    store.update_metadata(1, reference_profile=None)  # as versions trained before monitoring
    log(redis_client, IRIS)
    result = check_drift(redis_client, store, cfg())
    assert (result.status, result.version, result.features) == ("no_profile", 1, [])
    assert "no reference profile" in result.detail


def test_too_few_rows_judge_nothing(redis_client, store):
    for row in IRIS[:99]:
        log(redis_client, [row])
    result = check_drift(redis_client, store, cfg())
    assert (result.status, result.rows, result.features) == ("not_enough_data", 99, [])
    assert "fewer than min_rows (100)" in result.detail


def test_inputs_like_the_training_data_are_ok(redis_client, store):
    log(redis_client, IRIS, outputs=LABELS)
    result = check_drift(redis_client, store, cfg())
    assert (result.status, result.rows, result.drifted_features) == ("ok", 150, [])
    assert [f.name for f in result.features] == store.metadata(1).feature_names
    assert all(f.psi < 0.2 and f.ks_p_value > 0.01 for f in result.features)
    assert result.class_psi < 0.2


def test_shifted_inputs_drift(redis_client, store):
    log(redis_client, SHIFTED, outputs=["virginica"] * 150)
    result = check_drift(redis_client, store, cfg())
    assert result.status == "drift"
    assert result.drifted_features == ["petal_length", "petal_width"]
    by_name = {f.name: f for f in result.features}
    assert by_name["petal_length"].psi > 1 and by_name["petal_length"].ks_p_value < 1e-6
    assert not by_name["sepal_length"].drifted
    assert result.class_psi > 0.2  # every row predicted virginica, a third in training


def test_the_newest_rows_of_the_production_version_only(redis_client, store):
    log(redis_client, SHIFTED)  # older: out of the window below
    log(redis_client, SHIFTED, version=7)  # another version's
    log(redis_client, [[1.0, 2.0]] * 50)  # the wrong width
    log(redis_client, [[float("nan"), 1.0, 1.0, 1.0]] * 50)
    for start in range(0, 150, 10):  # newest: like the training data, ten rows a job
        log(redis_client, IRIS[start : start + 10])
    rows, predicted = recent_rows(redis_client, "iris", 1, 150, 4)
    assert rows.shape == (150, 4) and sorted(rows.tolist()) == sorted(IRIS)
    assert predicted == ["setosa"] * 150


def test_the_window_caps_the_rows_read(redis_client):
    for row in IRIS:
        log(redis_client, [row])
    rows, _ = recent_rows(redis_client, "iris", 1, 20, 4)
    assert rows.tolist() == IRIS[-20:][::-1]  # newest first


def test_predicted_labels_unknown_when_an_entry_lacks_them(redis_client):
    log(redis_client, IRIS[:2], outputs=["setosa"])  # one label for two rows
    log(redis_client, IRIS[2:4])
    rows, predicted = recent_rows(redis_client, "iris", 1, 10, 4)
    assert len(rows) == 4 and predicted is None


def test_run_stores_the_result_for_the_gateway(redis_client, store):
    log(redis_client, SHIFTED)
    result = run_monitoring(redis_client, store, cfg(), ttl=60)
    stored = DriftResult.model_validate_json(redis_client.get(monitoring_key("iris")))
    assert stored == result and stored.status == "drift" and stored.retrain is None
    assert redis_client.llen(TRAIN_QUEUE) == 0  # retrain_on_drift is off by default


# -- the drift trigger -------------------------------------------------------------------------


def test_drift_asks_for_one_retrain_through_the_single_flight(redis_client, store, monkeypatch):
    settings = cfg(monkeypatch, MONITORING__RETRAIN_ON_DRIFT="true")
    log(redis_client, SHIFTED)
    first = run_monitoring(redis_client, store, settings, ttl=60)
    assert first.retrain["requested"] and not first.retrain["joined"]
    job_id = first.retrain["job_id"]
    assert redis_client.get(lock_key("iris")) == job_id.encode()  # queued: the lock says so
    (message,) = redis_client.lrange(TRAIN_QUEUE, 0, -1)
    _, (args, kwargs, _) = decode_message(message)
    assert args == ["iris"] and kwargs["trigger"] == "drift"
    detail = kwargs["trigger_detail"]
    assert detail["features"] == ["petal_length", "petal_width"] and detail["version"] == 1
    assert set(detail["psi"]) == {"petal_length", "petal_width"} and detail["rows"] == 150
    again = run_monitoring(redis_client, store, settings, ttl=60)
    assert again.retrain["requested"] is False and "cooldown" in again.retrain["reason"]
    assert redis_client.llen(TRAIN_QUEUE) == 1


def test_without_a_cooldown_a_second_request_joins_the_queued_retrain(
    redis_client, store, monkeypatch
):
    settings = cfg(
        monkeypatch, MONITORING__RETRAIN_ON_DRIFT="true", MONITORING__RETRAIN_COOLDOWN_SECONDS="0"
    )
    log(redis_client, SHIFTED)
    first = run_monitoring(redis_client, store, settings, ttl=60)
    again = run_monitoring(redis_client, store, settings, ttl=60)
    assert again.retrain == {"requested": True, "job_id": first.retrain["job_id"], "joined": True}
    assert redis_client.llen(TRAIN_QUEUE) == 1


def test_drift_below_the_retrain_threshold_asks_for_nothing(redis_client, store, monkeypatch):
    settings = cfg(
        monkeypatch, MONITORING__RETRAIN_ON_DRIFT="true", MONITORING__RETRAIN_PSI_THRESHOLD="1e6"
    )
    log(redis_client, SHIFTED)
    result = check_drift(redis_client, store, settings)
    assert result.status == "drift" and maybe_retrain(redis_client, result, settings, 60) is None
    assert redis_client.get(drift_retrain_key("iris")) is None


@pytest.mark.parametrize(("rows", "status"), [(150, "ok"), (10, "not_enough_data")])
def test_no_drift_asks_for_nothing(redis_client, store, monkeypatch, rows, status):
    settings = cfg(monkeypatch, MONITORING__RETRAIN_ON_DRIFT="true")
    log(redis_client, IRIS[:rows], outputs=LABELS[:rows])
    result = run_monitoring(redis_client, store, settings, ttl=60)
    assert result.status == status and result.retrain is None
    assert redis_client.llen(TRAIN_QUEUE) == 0


# -- the task ----------------------------------------------------------------------------------


def test_the_monitor_task_checks_the_model_it_names(redis_client, store, monkeypatch):
    from tests.unit.workers.test_retrain import make_runtime

    rt = make_runtime()
    rt.redis = redis_client
    monkeypatch.setattr(tasks_module, "runtime", lambda: rt)
    task = create_app(get_settings()).tasks[MONITOR_TASK]
    log(redis_client, SHIFTED)
    assert task.run("iris") == {"status": "drift", "version": 1}
    assert orjson.loads(redis_client.get(monitoring_key("iris")))["status"] == "drift"
    with pytest.raises(Exception, match=r"no \[models.other\] table"):
        task.run("other")

"""workers/inference.py predict_jobs: one scikit-learn call per batch, results per job."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.settings import get_settings
from core.store import open_store
from core.versions import API_VERSION
from tests.factories import SETOSA, VERSICOLOR, VIRGINICA, loaded_model, predict_job
from training.pipeline import run_training
from training.serialization import load_model
from workers.inference import predict_jobs
from workers.model_cache import LoadedModel


class CountingEstimator:
    """Wraps the fitted pipeline and records every call the worker makes to it."""

    def __init__(self, inner):
        self.inner = inner
        self.calls: list[tuple[str, int]] = []

    def predict(self, X):
        self.calls.append(("predict", len(X)))
        return self.inner.predict(X)

    def predict_proba(self, X):
        self.calls.append(("predict_proba", len(X)))
        return self.inner.predict_proba(X)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_ENV", "testing")
        mp.setenv("MLOPS_ARTIFACTS_DIR", str(tmp_path_factory.mktemp("predict") / "artifacts"))
        from core.settings import reset_settings

        reset_settings()
        settings = get_settings()
        version = run_training(settings).version
        metadata, estimator = load_model(open_store(settings), version, settings)
        reset_settings()
    return metadata, estimator


@pytest.fixture
def model(fitted):
    metadata, estimator = fitted
    return loaded_model(metadata.version, CountingEstimator(estimator), metadata)


def alone(model: LoadedModel, rows) -> list:
    return model.estimator.inner.predict(np.asarray(rows, dtype=float)).tolist()


def test_one_sklearn_call_for_many_jobs(model):
    jobs = [
        predict_job(str(i), [SETOSA, VIRGINICA][: 1 + i % 2] + [VERSICOLOR] * i) for i in range(6)
    ]
    results = predict_jobs(model, jobs)
    total = sum(len(j["rows"]) for j in jobs)
    # one pass: predict_proba, then predict (the wrapper hides which classifier it is)
    assert model.estimator.calls == [("predict_proba", total), ("predict", total)]
    assert [r["job_id"] for r in results] == [j["job_id"] for j in jobs]
    for result, sent in zip(results, jobs, strict=True):
        assert result["status"] == "SUCCESS"
        assert result["predictions"] == alone(model, sent["rows"])
        assert len(result["probabilities"]) == len(sent["rows"])
        assert all(math.isclose(sum(p), 1.0, abs_tol=1e-4) for p in result["probabilities"])
        assert result["classes"] == model.metadata.classes
        assert result["request_id"] == sent["request_id"]
        assert result["model_version"] == model.version and result["model_name"] == "iris"
        assert result["api_version"] == API_VERSION


def test_reordered_features_are_mapped_to_the_models_order(model):
    names = model.feature_names
    reordered = list(reversed(names))
    results = predict_jobs(
        model,
        [
            predict_job("plain", [SETOSA, VIRGINICA], names),
            predict_job("reversed", [list(reversed(SETOSA)), list(reversed(VIRGINICA))], reordered),
        ],
    )
    assert results[0]["predictions"] == results[1]["predictions"] == ["setosa", "virginica"]
    assert results[0]["probabilities"] == results[1]["probabilities"]
    assert model.estimator.calls[0] == ("predict_proba", 4)


@pytest.mark.parametrize(
    "bad",
    [
        predict_job("bad", [[1.0, 2.0, 3.0]]),  # too few columns
        predict_job("bad", [SETOSA], ["a", "b", "c", "d"]),  # unknown feature names
        predict_job("bad", [["x", "y", "z", "w"]]),  # not numbers
        predict_job("bad", [SETOSA, [1.0, 2.0]]),  # ragged
        predict_job("bad", []),  # no rows
    ],
)
def test_schema_mismatch_fails_alone(model, bad):
    results = predict_jobs(model, [predict_job("a", [SETOSA]), bad, predict_job("b", [VIRGINICA])])
    assert [r["status"] for r in results] == ["SUCCESS", "FAILURE", "SUCCESS"]
    assert results[1]["error"]["reason"] == "schema_mismatch"
    assert results[1]["model_version"] == model.version
    assert model.estimator.calls[0] == ("predict_proba", 2)  # the others still share one call


def test_failing_batch_falls_back_per_job(model):
    """NaN passes the schema check but scikit-learn refuses it: only that job fails."""
    jobs = [
        predict_job("a", [SETOSA]),
        predict_job("nan", [[math.nan, 1.0, 1.0, 1.0]]),
        predict_job("b", [VIRGINICA]),
    ]
    results = predict_jobs(model, jobs)
    assert [r["status"] for r in results] == ["SUCCESS", "FAILURE", "SUCCESS"]
    assert results[1]["error"]["reason"] == "prediction_error"
    assert "NaN" in results[1]["error"]["message"]
    assert results[0]["predictions"] == ["setosa"] and results[2]["predictions"] == ["virginica"]
    predicts = [n for name, n in model.estimator.calls if name == "predict"]
    assert predicts == [1, 1]  # the batch was refused before scikit-learn; the good jobs alone


def test_estimator_without_probabilities(fitted):
    metadata, estimator = fitted

    class LabelsOnly:
        def predict(self, X):
            return estimator.predict(X)

    model = loaded_model(metadata.version, LabelsOnly(), metadata)
    result = predict_jobs(model, [predict_job("a", [SETOSA])])[0]
    assert result["predictions"] == ["setosa"]
    assert "probabilities" not in result and "classes" not in result


def test_no_jobs_no_call(model):
    assert predict_jobs(model, []) == []
    assert model.estimator.calls == []

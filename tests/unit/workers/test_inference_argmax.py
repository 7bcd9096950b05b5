"""The one-pass shortcut in workers/inference.py must agree with scikit-learn's own predict()."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from tests.factories import loaded_model
from workers.inference import PREDICT_IS_ARGMAX_PROBA, _predict, predict_is_argmax_proba

MODULES = {
    "DecisionTreeClassifier": "sklearn.tree",
    "ExtraTreesClassifier": "sklearn.ensemble",
    "GaussianNB": "sklearn.naive_bayes",
    "GradientBoostingClassifier": "sklearn.ensemble",
    "KNeighborsClassifier": "sklearn.neighbors",
    "LogisticRegression": "sklearn.linear_model",
    "RandomForestClassifier": "sklearn.ensemble",
}


@pytest.mark.parametrize("name", sorted(PREDICT_IS_ARGMAX_PROBA))
@pytest.mark.parametrize("n_classes", [2, 3])
def test_one_pass_predictions_equal_predict(name, n_classes):
    X, y = make_classification(
        n_samples=400, n_features=6, n_informative=4, n_classes=n_classes, random_state=0
    )
    labels = np.array(["a", "b", "c"])[y]
    estimator = getattr(importlib.import_module(MODULES[name]), name)()
    pipeline = make_pipeline(StandardScaler(), estimator).fit(X, labels)
    assert predict_is_argmax_proba(pipeline)
    rows = np.random.default_rng(1).normal(size=(500, 6)) * 2
    predictions, probabilities = _predict(loaded_model(estimator=pipeline, name="m"), rows)
    assert predictions == pipeline.predict(rows).tolist()
    assert np.allclose(probabilities, pipeline.predict_proba(rows), atol=1e-6)


def test_other_classifiers_still_call_predict():
    X, y = make_classification(n_samples=200, n_features=4, random_state=0)
    pipeline = make_pipeline(StandardScaler(), SVC(probability=True, random_state=0)).fit(X, y)
    assert not predict_is_argmax_proba(pipeline)
    predictions, probabilities = _predict(loaded_model(estimator=pipeline, name="m"), X)
    assert predictions == pipeline.predict(X).tolist()
    assert len(probabilities) == len(X)

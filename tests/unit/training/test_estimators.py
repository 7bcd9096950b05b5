"""training/estimators.py: only allow-listed scikit-learn classifiers, with their own params."""

from __future__ import annotations

import pytest

from training.errors import InvalidEstimator
from training.estimators import build_estimator


@pytest.mark.parametrize(
    ("class_path", "message"),
    [
        ("os.system", "not allowed"),
        ("subprocess.Popen", "not allowed"),
        ("sklearnx.Thing", "not allowed"),
        ("sklearn.nope.Thing", "cannot be imported"),
        ("sklearn.utils.check_array", "not a scikit-learn estimator"),
        ("sklearn.preprocessing.StandardScaler", "not a classifier"),
        ("sklearn.linear_model.LinearRegression", "not a classifier"),
    ],
)
def test_training_estimator_allow_list(class_path, message):
    with pytest.raises(InvalidEstimator, match=message):
        build_estimator(class_path, {})


def test_training_estimator_unknown_param():
    with pytest.raises(InvalidEstimator, match="bogus"):
        build_estimator("sklearn.linear_model.LogisticRegression", {"bogus": 1})


def test_training_estimator_params_are_passed():
    est = build_estimator("sklearn.ensemble.RandomForestClassifier", {"n_estimators": 7})
    assert est.n_estimators == 7

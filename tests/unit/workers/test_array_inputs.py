"""workers/array_inputs.py: scikit-learn's dataframe checks answer at once for the NumPy
arrays the worker predicts on, ask narwhals for anything else, and stay on scikit-learn's
path (a scikit-learn that moves them fails here rather than silently losing the shortcut)."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import validation

from workers import array_inputs

HAS_CHECKS = hasattr(validation, "nw")  # scikit-learn 1.8 and later ask narwhals


@pytest.fixture
def spied(monkeypatch):
    """scikit-learn's checks replaced by counting copies of themselves (restored after)."""
    calls = {"df_or_series": 0, "into_dataframe": 0}
    if not HAS_CHECKS:
        return calls
    dependencies = validation.nw.dependencies
    originals = {
        "df_or_series": (validation, "_nw_into_df_or_series"),
        "into_dataframe": (dependencies, "is_into_dataframe"),
    }
    for name, (module, attribute) in originals.items():
        original = getattr(module, attribute)

        def counted(x, _name=name, _original=original):
            calls[_name] += 1
            return _original(x)

        monkeypatch.setattr(module, attribute, counted)
    return calls


@pytest.fixture(scope="module")
def pipeline():
    features, labels = load_iris(return_X_y=True)
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(features, labels)


def predict(pipeline, rows):
    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        return pipeline.predict_proba(rows)


@pytest.mark.skipif(not HAS_CHECKS, reason="this scikit-learn makes no dataframe checks")
def test_an_ndarray_skips_narwhals_and_gets_the_same_answer(spied, pipeline):
    rows = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])
    before = predict(pipeline, rows)
    assert spied["df_or_series"] and spied["into_dataframe"]  # the checks are on the path
    assert array_inputs.install() is True
    calls_before = dict(spied)
    after = predict(pipeline, rows)
    assert dict(spied) == calls_before  # answered by the shortcut, narwhals not asked
    np.testing.assert_array_equal(before, after)


@pytest.mark.skipif(not HAS_CHECKS, reason="this scikit-learn makes no dataframe checks")
def test_anything_but_a_plain_ndarray_still_asks_narwhals(spied, pipeline):
    array_inputs.install()
    predict(pipeline, [[5.1, 3.5, 1.4, 0.2]])  # a list: turned into an array after the checks
    assert spied["df_or_series"] >= 1
    asked = spied["into_dataframe"]
    assert validation.nw.dependencies.is_into_dataframe(np.ma.masked_array([[1.0]])) is False
    assert spied["into_dataframe"] == asked + 1  # a subclass is not taken for a plain array


@pytest.mark.skipif(not HAS_CHECKS, reason="this scikit-learn makes no dataframe checks")
def test_installing_twice_wraps_once(spied):
    array_inputs.install()
    wrapped = validation._nw_into_df_or_series
    array_inputs.install()
    assert validation._nw_into_df_or_series is wrapped


def test_the_shortcut_installs_wherever_scikit_learn_asks_narwhals(spied):
    """Fails when a scikit-learn that uses narwhals no longer has the checks wrapped here."""
    assert array_inputs.install() is HAS_CHECKS


def test_a_scikit_learn_without_the_checks_is_left_alone(monkeypatch):
    monkeypatch.delattr(validation, "_nw_into_df_or_series", raising=False)
    monkeypatch.delattr(validation, "nw", raising=False)
    assert array_inputs.install() is False

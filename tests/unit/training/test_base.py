"""training/base.py: one contract test over every registered trainer, then each step of the base
class on its own (the iris trainer as the concrete one)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from core.settings import get_settings
from training.errors import NotEnoughData
from training.registry import available_trainers, get_trainer
from training.trainers.iris import IrisTrainer


# -- contract: every registered trainer behaves like a scikit-learn estimator ----------------
@pytest.fixture(params=available_trainers())
def trainer(request):
    return get_trainer(request.param).from_settings(get_settings().model())


def test_training_contract_constructor_only_stores_params(trainer):
    params = trainer.get_params()
    rebuilt = type(trainer)(**params)
    assert vars(rebuilt) == params
    assert not [name for name in vars(rebuilt) if name.endswith("_")]
    assert clone(trainer).get_params() == params


def test_training_contract_fit_predict_describe(trainer):
    data = trainer.load_data()
    split = trainer.split(data)
    assert trainer.fit(split.X_train, split.y_train, feature_names=data.feature_names) is trainer
    assert isinstance(trainer.pipeline_, Pipeline)
    predictions = trainer.predict(split.X_test)
    assert predictions.shape == (len(split.X_test),)
    assert set(predictions) <= set(trainer.classes_)
    metrics = trainer.evaluate(split.X_test, split.y_test)
    assert set(metrics) == {"accuracy", "f1_macro", "balanced_accuracy"}
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
    described = trainer.describe()
    assert [f["name"] for f in described["features"]] == data.feature_names
    assert described["classes"] == sorted(set(data.y))
    assert described["metrics"] == metrics
    n = len(described["classes"])
    matrix = described["confusion_matrix"]
    assert len(matrix) == n and all(len(row) == n for row in matrix)
    assert sum(map(sum, matrix)) == len(split.y_test)


def test_training_contract_unfitted_predict_fails(trainer):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        trainer.predict(np.zeros((1, 4)))


# -- the steps ---------------------------------------------------------------------------------
def test_training_split_is_stratified_and_reproducible():
    trainer = IrisTrainer(test_size=0.2, random_state=1)
    data = trainer.load_data()
    a, b = trainer.split(data), trainer.split(data)
    assert len(a.y_test) == 30 and len(a.y_train) == 120
    assert np.array_equal(a.X_test, b.X_test)
    assert {label: list(a.y_test).count(label) for label in set(a.y_test)} == {
        "setosa": 10,
        "versicolor": 10,
        "virginica": 10,
    }


def test_training_build_pipeline_is_scaler_plus_configured_estimator():
    pipeline = IrisTrainer(
        estimator="sklearn.tree.DecisionTreeClassifier", estimator_params={"max_depth": 2}
    ).build_pipeline()
    assert isinstance(pipeline.steps[0][1], StandardScaler)
    assert type(pipeline.steps[1][1]).__name__ == "DecisionTreeClassifier"
    assert pipeline.steps[1][1].max_depth == 2


def test_training_fit_without_feature_names_uses_positions():
    trainer = IrisTrainer()
    data = trainer.load_data()
    trainer.fit(data.X, data.y)
    assert trainer.feature_names_ == ["x0", "x1", "x2", "x3"]
    assert trainer.n_features_in_ == 4


def test_training_split_refuses_a_single_class():
    trainer = IrisTrainer()
    data = trainer.load_data()
    from training.data import make_dataset

    one_class = make_dataset(data.X[:50], data.y[:50], data.feature_names)
    with pytest.raises(NotEnoughData, match="at least 2 classes"):
        trainer.split(one_class)


def test_training_split_refuses_too_few_rows():
    from training.data import make_dataset

    tiny = make_dataset(np.arange(6.0).reshape(3, 2), ["a", "b", "b"], ["p", "q"])
    with pytest.raises(NotEnoughData, match="cannot split 3 rows"):
        IrisTrainer().split(tiny)

"""Each trainer step on its own, plus one contract test over every registered trainer."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from core.errors import TrainingError
from core.settings import get_settings
from training.errors import (
    DataFileNotFound,
    EmptyDataset,
    InvalidEstimator,
    MalformedData,
    NonNumericFeature,
    NotEnoughData,
    UnknownColumn,
)
from training.estimators import build_estimator
from training.registry import available_trainers, get_trainer
from training.trainers.iris import FEATURE_NAMES, IrisTrainer
from training.trainers.tabular import CsvTrainer


def write_csv(tmp_path, text: str, name: str = "data.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


# -- contract: every registered trainer behaves like a scikit-learn estimator ----------------
@pytest.fixture(params=available_trainers())
def trainer(request):
    return get_trainer(request.param).from_settings(get_settings())


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


# -- iris -------------------------------------------------------------------------------------
def test_training_iris_load_data_names_and_labels():
    data = IrisTrainer().load_data()
    assert data.feature_names == [
        "sepal_length",
        "sepal_width",
        "petal_length",
        "petal_width",
    ]
    assert data.feature_names == FEATURE_NAMES
    assert data.X.shape == (150, 4) and data.X.dtype == np.float64
    assert sorted(set(data.y)) == ["setosa", "versicolor", "virginica"]
    assert len(data.fingerprint) == 64
    assert IrisTrainer().load_data().fingerprint == data.fingerprint


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


# -- csv ----------------------------------------------------------------------------------------
def test_training_csv_reads_shipped_penguins():
    data = CsvTrainer.from_settings(get_settings()).load_data()
    assert data.feature_names == [
        "bill_length_mm",
        "bill_depth_mm",
        "flipper_length_mm",
        "body_mass_g",
    ]
    assert 60 <= data.n_rows <= 150
    assert sorted(set(data.y)) == ["Adelie", "Chinstrap", "Gentoo"]


def test_training_csv_selected_features_and_fingerprint_follows_rows(tmp_path):
    one = write_csv(tmp_path, "a,b,c,t\n1,2,3,x\n4,5,6,y\n", "one.csv")
    two = write_csv(tmp_path, "a,b,c,t\r\n1.0,2,3,x\r\n4,5,6,y\r\n", "two.csv")
    three = write_csv(tmp_path, "a,b,c,t\n1,2,3,x\n4,5,7,y\n", "three.csv")
    data = CsvTrainer(path=str(one), target="t", features=["c", "a"]).load_data()
    assert data.feature_names == ["c", "a"]
    assert data.X.tolist() == [[3.0, 1.0], [6.0, 4.0]]
    assert list(data.y) == ["x", "y"]
    fp = {p: CsvTrainer(path=str(p), target="t").load_data().fingerprint for p in (one, two, three)}
    assert fp[one] == fp[two] != fp[three]


@pytest.mark.parametrize(
    ("text", "kwargs", "error", "message"),
    [
        ("", {}, EmptyDataset, "is empty"),
        ("a,b,t\n", {}, EmptyDataset, "no data rows"),
        ("a,b,t\n1,2,x\n", {"target": "kind"}, UnknownColumn, "target column 'kind'"),
        ("a,b,t\n1,2,x\n", {"features": ["a", "zz"]}, UnknownColumn, "'zz'"),
        ("a,b,t\n1,2,x\n3,abc,y\n", {}, NonNumericFeature, "'b'.*'abc'.*row 2 \\(line 3\\)"),
        ("a,b,t\n1,,x\n", {}, NonNumericFeature, "'b'.*row 1"),
        ("a,b,t\n1,nan,x\n", {}, NonNumericFeature, "'b'"),
        ("a,b,t\n1,2\n", {}, MalformedData, "2 fields"),
        ("a,b,t\n1,2, \n", {}, MalformedData, "empty target"),
        ("t\nx\n", {}, EmptyDataset, "no feature columns"),
    ],
)
def test_training_csv_user_mistakes(tmp_path, text, kwargs, error, message):
    path = write_csv(tmp_path, text)
    trainer = CsvTrainer(path=str(path), **{"target": "t", **kwargs})
    with pytest.raises(error, match=message) as info:
        trainer.load_data()
    assert isinstance(info.value, TrainingError)


def test_training_csv_missing_file(tmp_path):
    with pytest.raises(DataFileNotFound, match=r"nope\.csv"):
        CsvTrainer(path=str(tmp_path / "nope.csv"), target="t").load_data()


def test_training_csv_relative_path_is_resolved_against_project():
    data = CsvTrainer(path="tests/data/penguins_small.csv", target="species").load_data()
    assert data.source.endswith("tests/data/penguins_small.csv")


# -- estimator allow-list -------------------------------------------------------------------------
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

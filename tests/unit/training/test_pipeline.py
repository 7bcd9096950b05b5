"""run_training end to end on a real store in tmp_path (the autouse fixture's artifacts dir)."""

from __future__ import annotations

import json

import pytest
import sklearn

from core.errors import TrainingError, UnknownTrainer
from core.settings import get_settings
from core.store import open_store
from tests.factories import settings_with
from training.pipeline import STEPS, TrainingOutcome, run_training
from training.serialization import load_model


def test_training_first_run_registers_and_promotes():
    settings = get_settings()
    steps: list[tuple[str, int, str]] = []
    outcome = run_training(settings, progress=lambda *report: steps.append(report), force=True)
    assert [s for s, _, _ in steps] == list(STEPS)
    assert [p for _, p, _ in steps] == sorted(p for _, p, _ in steps) and steps[-1][1] == 100
    details = {step: detail for step, _, detail in steps}
    assert details["splitting"].startswith("150 rows, 4 features, 3 classes")
    assert details["fitting"] == "LogisticRegression on 120 rows"
    assert details["gating"].startswith("v1 (accuracy ")
    assert details["gating"].endswith("against no production version")
    assert details["done"] == "v1 promoted"
    assert outcome.version == 1 and outcome.promoted and outcome.decision == "promoted"
    store = open_store(settings)
    assert store.production_version() == 1
    meta = store.metadata(1)
    assert meta.name == "iris" and meta.trainer == "iris"
    assert meta.feature_names == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert meta.classes == ["setosa", "versicolor", "virginica"]
    assert meta.gate is not None and meta.gate.decision == "promoted"
    assert meta.sklearn_version == sklearn.__version__
    assert meta.n_train == 120 and meta.n_test == 30
    assert sum(map(sum, meta.confusion_matrix)) == 30
    assert meta.params["estimator"] == "sklearn.linear_model.LogisticRegression"
    assert meta.trained_at.endswith("+00:00")
    assert meta.metrics["accuracy"] == outcome.candidate == outcome.metrics["accuracy"]
    card = store.read_file(1, "card.html").decode()
    assert "promoted" in card and meta.data_fingerprint in card
    _, model = load_model(store, 1, settings)
    assert model.predict([[5.1, 3.5, 1.4, 0.2]]).tolist() == ["setosa"]


def test_training_outcome_to_dict_is_json_safe():
    outcome = run_training(get_settings(), force=True)
    data = outcome.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert set(data) == {
        "model_name", "version", "decision", "promoted", "metric", "candidate",
        "production", "production_version", "margin", "reason", "metrics", "trigger", "data",
    }  # fmt: skip
    assert isinstance(outcome, TrainingOutcome)


def test_training_rejected_run_keeps_production(monkeypatch):
    run_training(get_settings(), force=True)
    settings = settings_with(monkeypatch, TRAINING__PROMOTION_MARGIN="0.5")
    outcome = run_training(settings, force=True)
    assert outcome.version == 2 and not outcome.promoted and outcome.decision == "rejected"
    assert outcome.production_version == 1 and outcome.production is not None
    store = open_store(settings)
    assert store.production_version() == 1
    assert store.metadata(2).gate.decision == "rejected"
    assert "rejected" in store.read_file(2, "card.html").decode()


def test_training_equal_second_run_promotes_and_keeps_history():
    run_training(get_settings(), force=True)
    outcome = run_training(get_settings(), force=True)
    assert outcome.promoted and outcome.production_version == 1
    assert open_store(get_settings()).aliases().history == [1]


def test_training_csv_trainer_with_skops(monkeypatch):
    settings = settings_with(
        monkeypatch, DEFAULT_MODEL="penguins", TRAINING__TRAINER="csv",
        TRAINING__ARTIFACT_FORMAT="skops", TRAINING__METRIC="f1_macro",
    )  # fmt: skip
    outcome = run_training(settings, force=True)
    assert outcome.model_name == "penguins" and outcome.metric == "f1_macro"
    meta, model = load_model(open_store(settings), outcome.version, settings)
    assert meta.artifact_file == "model.skops" and meta.trainer == "csv"
    assert model.predict([[47.5, 15.0, 217, 5076]]).tolist() == ["Gentoo"]


def test_training_trainer_override_argument(monkeypatch):
    settings = settings_with(monkeypatch, DEFAULT_MODEL="penguins")
    outcome = run_training(settings, trainer="csv", force=True)
    assert open_store(settings).metadata(outcome.version).trainer == "csv"


@pytest.mark.parametrize(
    ("env", "error", "message"),
    [
        ({"TRAINING__TRAINER": "nope"}, UnknownTrainer, "unknown trainer 'nope'"),
        ({"TRAINING__TRAINER": "csv", "TRAINING__CSV__TARGET": "kind"}, TrainingError, "kind"),
        (
            {"TRAINING__ESTIMATOR__CLASS_PATH": "builtins.eval"},
            TrainingError,
            "not allowed",
        ),
        (
            {"TRAINING__ESTIMATOR__PARAMS": '@json {"max_iter": -1}'},
            TrainingError,
            "max_iter",
        ),
    ],
)
def test_training_failed_run_changes_nothing(monkeypatch, env, error, message):
    run_training(get_settings(), force=True)
    store = open_store(get_settings())
    before = (store.versions(), store.aliases())
    settings = settings_with(monkeypatch, **env)
    with pytest.raises(error, match=message):
        run_training(settings, force=True)
    assert (store.versions(), store.aliases()) == before


def test_training_unloadable_artifact_is_not_registered(monkeypatch):
    from core.errors import IncompatibleArtifact
    from training import pipeline

    def refuse(data, fmt):
        raise IncompatibleArtifact("skops artifact contains types that are not trusted: X")

    monkeypatch.setattr(pipeline, "loads_model", refuse)
    settings = settings_with(monkeypatch, TRAINING__ARTIFACT_FORMAT="skops")
    with pytest.raises(TrainingError, match=r"cannot be saved as skops.*not trusted"):
        run_training(settings, force=True)
    assert open_store(settings).versions() == []


def test_training_broken_progress_callback_does_not_break_the_run():
    def progress(step, pct, detail):
        raise RuntimeError("broker down")

    assert run_training(get_settings(), progress=progress, force=True).promoted

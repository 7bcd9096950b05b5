"""Artifacts: joblib and skops round trips, trusted skops types, scikit-learn version checks."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn
from loguru import logger

from core.errors import IncompatibleArtifact
from core.settings import get_settings, reset_settings
from tests.factories import metadata, store_at
from training.serialization import dump_model, load_model, loads_model
from training.trainers.iris import IrisTrainer


@pytest.fixture(scope="module")
def fitted():
    trainer = IrisTrainer()
    data = trainer.load_data()
    trainer.fit(data.X, data.y, data.feature_names)
    return trainer.pipeline_, data.X


def register(tmp_path, pipeline, fmt="joblib", sklearn_version=sklearn.__version__):
    store = store_at(tmp_path / "store", "iris", fmt)
    meta = metadata(("sepal_length",), fmt, name="iris", sklearn_version=sklearn_version)
    return store, store.register(dump_model(pipeline, fmt), meta).version


@pytest.mark.parametrize("fmt", ["joblib", "skops"])
def test_training_round_trip_through_store(tmp_path, fitted, fmt, monkeypatch):
    monkeypatch.setenv("MLOPS_TRAINING__ARTIFACT_FORMAT", fmt)
    reset_settings()
    pipeline, X = fitted
    store, version = register(tmp_path, pipeline, fmt)
    meta, loaded = load_model(store, version, get_settings())
    assert meta.artifact_format == fmt
    assert np.array_equal(loaded.predict(X), pipeline.predict(X))


def test_training_skops_tree_models_round_trip():
    trainer = IrisTrainer(
        estimator="sklearn.ensemble.RandomForestClassifier",
        estimator_params={"n_estimators": 3, "random_state": 0},
    )
    data = trainer.load_data()
    trainer.fit(data.X, data.y)
    restored = loads_model(dump_model(trainer.pipeline_, "skops"), "skops")
    assert np.array_equal(restored.predict(data.X), trainer.predict(data.X))


def test_training_skops_refuses_untrusted_types(monkeypatch):
    from training import serialization

    trainer = IrisTrainer(estimator="sklearn.tree.DecisionTreeClassifier")
    data = trainer.load_data()
    trainer.fit(data.X, data.y)
    blob = dump_model(trainer.pipeline_, "skops")
    monkeypatch.setattr(serialization, "TRUSTED_SKOPS_TYPES", frozenset())
    with pytest.raises(IncompatibleArtifact, match=r"sklearn\.tree\._tree\.Tree"):
        loads_model(blob, "skops")


def test_training_unknown_format_refused(fitted):
    with pytest.raises(IncompatibleArtifact, match="unknown artifact format"):
        dump_model(fitted[0], "pickle")
    with pytest.raises(IncompatibleArtifact, match="unknown artifact format"):
        loads_model(b"", "pickle")


def test_training_sklearn_mismatch_refused(tmp_path, fitted, monkeypatch):
    from training import serialization

    store, version = register(tmp_path, fitted[0], sklearn_version="0.0.1")
    calls = []
    monkeypatch.setattr(serialization.joblib, "load", lambda *a, **k: calls.append(a))
    with pytest.raises(IncompatibleArtifact, match=r"scikit-learn 0\.0\.1"):
        load_model(store, version, get_settings())
    assert calls == []


def test_training_sklearn_mismatch_allowed_with_warning(tmp_path, fitted, monkeypatch):
    monkeypatch.setenv("MLOPS_TRAINING__ALLOW_SKLEARN_MISMATCH", "true")
    reset_settings()
    store, version = register(tmp_path, fitted[0], sklearn_version="0.0.1")
    messages: list[str] = []
    sink = logger.add(lambda m: messages.append(m.record["message"]), level="WARNING")
    try:
        _, loaded = load_model(store, version, get_settings())
    finally:
        logger.remove(sink)
    assert loaded.predict(fitted[1][:2]).shape == (2,)
    assert any("0.0.1" in m and "allow_sklearn_mismatch" in m for m in messages)


def test_skops_is_a_release_without_known_code_execution_advisories():
    """0.13 fixed CVE-2025-54886: up to 0.12.0, Card.get_model silently fell back to joblib."""
    import importlib.metadata
    import tomllib

    from core.settings import ROOT

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "skops>=0.13" in pyproject["project"]["optional-dependencies"]["worker"]
    installed = tuple(int(p) for p in importlib.metadata.version("skops").split(".")[:2])
    assert installed >= (0, 13)

"""register_file: a classifier fitted elsewhere becomes a signed, described, gated version."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import joblib
import numpy as np
import pytest
import sklearn
import skops.io as sio
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.dummy import DummyClassifier
from sklearn.exceptions import InconsistentVersionWarning
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from core.errors import SigningKeyMissing, TrainingError
from core.settings import ROOT, get_settings
from core.store import open_store
from tests.factories import settings_with
from training.errors import RegistrationRefused
from training.register import load_file, register_file
from training.serialization import load_model

PENGUINS = ROOT / "tests" / "data" / "penguins_small.csv"
FEATURES = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
FEATURE_TEXT = ",".join(FEATURES)
MODEL = "own"


def penguins() -> tuple[np.ndarray, np.ndarray]:
    with open(PENGUINS, newline="") as fh:
        rows = list(csv.DictReader(fh))
    X = np.array([[float(row[f]) for f in FEATURES] for row in rows])
    return X, np.array([row["species"] for row in rows], dtype=object)


def fitted(estimator=None):
    X, y = penguins()
    estimator = estimator or make_pipeline(StandardScaler(), LogisticRegression())
    return estimator.fit(X, y)


def saved(tmp_path: Path, estimator, name: str = "model.joblib") -> Path:
    path = tmp_path / name
    if name.endswith(".skops"):
        sio.dump(estimator, path)
    else:
        joblib.dump(estimator, path)
    return path


def register(path: Path, settings=None, **options):
    settings = settings or get_settings()
    options.setdefault("features", FEATURE_TEXT)
    return register_file(settings, open_store(settings, MODEL), path, **options)


def evaluated(**options) -> dict:
    return {"eval_csv": PENGUINS, "target": "species", **options}


def store_state():
    store = open_store(get_settings(), MODEL)
    return store.versions(), store.production_version()


# -- registering ------------------------------------------------------------------------------
def test_register_first_version_is_signed_described_carded_and_promoted(tmp_path):
    pipeline = fitted()
    path = saved(tmp_path, pipeline)
    outcome = register(path)
    assert (outcome.model_name, outcome.version, outcome.decision) == (MODEL, 1, "promoted")
    settings = get_settings()
    store = open_store(settings, MODEL)
    assert store.production_version() == 1
    meta, restored = load_model(store, 1, settings)  # signature and sha256 verified first
    assert meta.signature is not None and meta.trainer == "registered"
    assert meta.feature_names == FEATURES
    assert meta.classes == ["Adelie", "Chinstrap", "Gentoo"]
    assert meta.sklearn_version and meta.numpy_version == np.__version__ and meta.python_version
    assert meta.source.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert meta.source.format == "joblib" and meta.gate is None
    X, _ = penguins()
    assert restored.predict(X).tolist() == pipeline.predict(X).tolist()
    card = store.read_file(1, "card.html").decode()
    assert "own v1" in card and meta.source.sha256 in card and "registered from" in card


def test_register_without_eval_keeps_production_unless_promote_is_given(tmp_path):
    path = saved(tmp_path, fitted())
    register(path)
    second = register(path)
    assert second.decision == "registered" and "production stays v1" in second.reason
    assert open_store(get_settings(), MODEL).production_version() == 1
    third = register(path, promote=True)
    assert third.decision == "promoted"
    assert open_store(get_settings(), MODEL).aliases().model_dump() == {
        "production": 3,
        "history": [1],
    }


def test_register_with_eval_scores_both_on_it_and_the_gate_decides(tmp_path):
    good = saved(tmp_path, fitted(), "good.joblib")
    poor = saved(tmp_path, fitted(DummyClassifier(strategy="most_frequent")), "poor.joblib")
    assert register(poor, **evaluated()).decision == "promoted"  # first: nothing to beat
    better = register(good, **evaluated())
    assert better.decision == "promoted", better.reason
    store = open_store(get_settings(), MODEL)
    gate = store.metadata(2).gate
    X, y = penguins()
    baseline = float(np.mean(fitted(DummyClassifier(strategy="most_frequent")).predict(X) == y))
    assert gate.production == pytest.approx(baseline)  # production scored on the eval set
    assert gate.candidate == pytest.approx(store.metadata(2).metrics["accuracy"])
    assert store.metadata(2).confusion_matrix is not None and store.metadata(2).n_test == len(y)
    worse = register(poor, **evaluated())
    assert worse.decision == "rejected" and "< production" in worse.reason
    assert store.production_version() == 2
    assert "rejected" in store.read_file(3, "card.html").decode()


def test_register_gate_uses_the_model_metric_and_margin(monkeypatch, tmp_path):
    path = saved(tmp_path, fitted())
    settings = settings_with(monkeypatch, TRAINING__PROMOTION_MARGIN="0.5")
    register(path, settings)
    equal = register(path, settings, **evaluated())
    assert equal.decision == "rejected" and "margin 0.5" in equal.reason
    settings = settings_with(
        monkeypatch,
        **{
            f"MODELS__{MODEL.upper()}__METRIC": "f1_macro",
            f"MODELS__{MODEL.upper()}__PROMOTION_MARGIN": "0",
        },
    )
    assert register(path, settings, **evaluated()).reason.startswith("f1_macro")


def test_register_skops_file_into_a_joblib_store(tmp_path):
    path = saved(tmp_path, fitted(), "model.skops")
    outcome = register(path)
    meta = open_store(get_settings(), MODEL).metadata(outcome.version)
    assert meta.source.format == "skops" and meta.artifact_format == "joblib"


def test_register_takes_features_from_feature_names_in(tmp_path):
    estimator = fitted(GaussianNB())
    estimator.feature_names_in_ = np.array(FEATURES, dtype=object)
    assert register(saved(tmp_path, estimator), features=None).version == 1
    assert open_store(get_settings(), MODEL).metadata(1).feature_names == FEATURES


class Custom(ClassifierMixin, BaseEstimator):
    """A classifier skops does not know: its type is untrusted."""

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[0])


def test_register_skops_untrusted_type_needs_trust(tmp_path):
    path = saved(tmp_path, fitted(Custom()), "custom.skops")
    with pytest.raises(RegistrationRefused, match=r"does not trust: .*Custom.*--trust"):
        register(path)
    assert store_state() == ([], None)
    estimator, _ = load_file(path, "skops", trust=True)
    assert isinstance(estimator, Custom)


def test_register_into_a_skops_store(monkeypatch, tmp_path):
    settings = settings_with(monkeypatch, TRAINING__ARTIFACT_FORMAT="skops")
    outcome = register(saved(tmp_path, fitted()), settings)
    meta, _ = load_model(open_store(settings, MODEL), outcome.version, settings)
    assert meta.artifact_file == "model.skops" and meta.source.format == "joblib"
    custom = saved(tmp_path, fitted(Custom()), "custom.skops")
    with pytest.raises(TrainingError, match=r"cannot be saved as skops: .* not trusted: .*Custom"):
        register(custom, settings, trust=True)  # trusted here, never by the workers
    assert store_state() == ([1], 1)


def other_sklearn_version(tmp_path: Path) -> Path:
    """A pipeline as another scikit-learn version pickles it (its version string replaced)."""
    path = saved(tmp_path, fitted())
    version = sklearn.__version__.encode()
    other = b"0." + b"9" * (len(version) - 2)
    path.write_bytes(path.read_bytes().replace(version, other))
    return path


def test_register_refuses_another_sklearn_version_unless_allowed(monkeypatch, tmp_path):
    path = other_sklearn_version(tmp_path)
    with pytest.raises(RegistrationRefused, match=r"was saved by scikit-learn 0\.9+, this is"):
        register(path)
    assert store_state() == ([], None)
    settings = settings_with(monkeypatch, TRAINING__ALLOW_SKLEARN_MISMATCH="true")
    with pytest.warns(InconsistentVersionWarning):
        assert register(path, settings).version == 1


# -- refusals: each names the problem and writes nothing --------------------------------------
def _unfitted(tmp_path):
    return saved(tmp_path, make_pipeline(StandardScaler(), LogisticRegression()))


def _garbage(tmp_path):
    path = tmp_path / "garbage.joblib"
    path.write_bytes(b"not a pickle at all")
    return path


REFUSALS = {
    "missing file": (lambda tmp: tmp / "nope.joblib", {}, "does not exist"),
    "unloadable file": (_garbage, {}, "cannot load .* as a joblib file"),
    "not an estimator": (lambda tmp: saved(tmp, {"a": 1}), {}, "holds a dict, not a scikit-learn"),
    "not fitted": (_unfitted, {}, "is not fitted"),
    "not a classifier": (
        lambda tmp: saved(tmp, LinearRegression().fit(*_numeric())),
        {},
        "not a classifier",
    ),
    "feature count": (
        lambda tmp: saved(tmp, fitted()),
        {"features": "a,b"},
        r"2 features given \(a, b\) but the estimator was fitted on 4",
    ),
    "duplicate features": (
        lambda tmp: saved(tmp, fitted()),
        {"features": "a,a,b,c"},
        "distinct, non-empty",
    ),
    "feature names differ": (
        lambda tmp: saved(tmp, _named(["w", "x", "y", "z"])),
        {},
        "differ from the estimator's feature_names_in_",
    ),
    "no features and no names": (
        lambda tmp: saved(tmp, fitted()),
        {"features": None},
        "--features is required",
    ),
    "eval lacks columns": (
        lambda tmp: saved(tmp, fitted()),
        evaluated(target="kind"),
        "lacks column.* kind",
    ),
    "eval missing": (
        lambda tmp: saved(tmp, fitted()),
        evaluated(eval_csv=Path("/nonexistent/eval.csv")),
        "evaluation set .* does not exist",
    ),
    "eval without target": (
        lambda tmp: saved(tmp, fitted()),
        {"eval_csv": PENGUINS},
        "--eval needs --target",
    ),
    "eval and promote": (
        lambda tmp: saved(tmp, fitted()),
        evaluated(promote=True),
        "exclude each other",
    ),
}


def _numeric():
    X, y = penguins()
    return X, np.arange(len(y), dtype=float)


def _named(names):
    estimator = fitted(GaussianNB())
    estimator.feature_names_in_ = np.array(names, dtype=object)
    return estimator


@pytest.mark.parametrize("case", list(REFUSALS))
def test_register_refuses(tmp_path, case):
    make, options, message = REFUSALS[case]
    path = make(tmp_path)
    with pytest.raises(RegistrationRefused, match=message):
        register(path, **options)
    assert store_state() == ([], None)
    assert not (Path(get_settings().artifacts_dir) / MODEL).exists()


def test_register_refuses_an_invalid_model_name(tmp_path):
    settings = get_settings()
    path = saved(tmp_path, fitted())
    with pytest.raises(RegistrationRefused, match="is not a model name"):
        register_file(settings, open_store(settings, "../escape"), path, features=FEATURE_TEXT)
    assert not (tmp_path / "escape").exists()
    assert not Path(settings.artifacts_dir).exists()


def test_register_refuses_without_a_private_key(monkeypatch, tmp_path):
    settings = settings_with(monkeypatch, SIGNING__PRIVATE_KEY="")
    with pytest.raises(SigningKeyMissing):
        register(saved(tmp_path, fitted()), settings)

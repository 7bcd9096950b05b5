"""Bring your own model: a scikit-learn classifier fitted elsewhere becomes a new version.

``python -m training register FILE --model NAME --features a,b,c [--eval CSV --target COL]``.
The file is checked (it loads, is a fitted classifier, takes exactly these features), stored
in the store's format after a round trip, signed and described like a trained version, and
gated when an evaluation set is given. Every check runs before anything is written.

Loading a joblib file runs code from it (joblib is pickle): register only files you trust.
A skops file loads without running code; a type in it that neither skops nor this project
trusts is refused unless ``trust`` is set.
"""

from __future__ import annotations

import csv
import io
import platform
import re
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import joblib
import numpy as np
import sklearn
from loguru import logger
from sklearn.base import is_classifier
from sklearn.exceptions import InconsistentVersionWarning, NotFittedError
from sklearn.utils.validation import check_is_fitted

from core.errors import MLOpsError
from core.settings import MODEL_NAME, MODEL_NAME_RULE, MonitoringSettings, Settings
from core.store import FeatureSpec, ModelMetadata, ModelStore, SourceFile, sha256_hex
from training.data import Dataset
from training.errors import RegistrationRefused
from training.estimators import plain
from training.pipeline import gate_and_promote, record_decision, save_artifact
from training.profile import build_profile
from training.scoring import confusion, score_all
from training.serialization import ARTIFACT_FILES, FORMATS, load_model

TRAINER = "registered"  # what metadata.trainer says of a version that was not trained here


@dataclass(frozen=True)
class Registered:
    model_name: str
    version: int
    decision: str  # "promoted" | "rejected" | "registered" (not gated, not promoted)
    reason: str


def file_format(path: Path, fmt: str | None) -> str:
    """The format given, else the file's extension's (``.skops``), else joblib."""
    if fmt is None:
        fmt = "skops" if path.suffix == ".skops" else "joblib"
    if fmt not in FORMATS:
        raise RegistrationRefused(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return fmt


def load_file(path: Path, fmt: str, trust: bool = False, allow_mismatch: bool = False):
    """The estimator in ``path``, and the file's bytes. joblib runs code from the file. One
    pickled by another scikit-learn version is refused unless ``allow_mismatch``."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RegistrationRefused(f"{path} does not exist") from None
    except OSError as exc:
        raise RegistrationRefused(f"cannot read {path}: {exc.strerror or exc}") from None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InconsistentVersionWarning)
        estimator = _deserialize(path, data, fmt, trust)
    for warning in caught:
        if isinstance(warning.message, InconsistentVersionWarning) and not allow_mismatch:
            raise RegistrationRefused(
                f"{path} was saved by scikit-learn {warning.message.original_sklearn_version}, "
                f"this is {sklearn.__version__}: refit it with {sklearn.__version__} (or set "
                "training.allow_sklearn_mismatch = true)"
            )
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return estimator, data


def _deserialize(path: Path, data: bytes, fmt: str, trust: bool):
    try:
        if fmt == "joblib":
            return joblib.load(io.BytesIO(data))
        import skops.io as sio

        untrusted = sorted(set(sio.get_untrusted_types(data=data)))
        if untrusted and not trust:
            raise RegistrationRefused(
                f"{path} contains types skops does not trust: {', '.join(untrusted)}; "
                "pass --trust if you trust this file"
            )
        return sio.loads(data, trusted=untrusted)
    except MLOpsError:
        raise
    except Exception as exc:  # pickle, zip, skops and import errors alike
        raise RegistrationRefused(
            f"cannot load {path} as a {fmt} file: {type(exc).__name__}: {exc}"
        ) from None


def feature_list(text: str | None, estimator) -> list[str]:
    """The features the estimator takes, checked against what it recorded when it was fitted
    (``n_features_in_``, ``feature_names_in_``); None: its ``feature_names_in_``."""
    recorded = getattr(estimator, "feature_names_in_", None)
    recorded = None if recorded is None else [str(name) for name in recorded]
    if text is None:
        if recorded is None:
            raise RegistrationRefused(
                "--features is required: the estimator was not fitted on named columns"
            )
        features = recorded
    else:
        features = [name.strip() for name in text.split(",")]
    if not all(features) or len(set(features)) != len(features):
        raise RegistrationRefused(f"--features must be distinct, non-empty names: {text!r}")
    expected = getattr(estimator, "n_features_in_", None)
    if expected is not None and int(expected) != len(features):
        raise RegistrationRefused(
            f"{len(features)} features given ({', '.join(features)}) but the estimator was "
            f"fitted on {int(expected)} (n_features_in_)"
        )
    if recorded is not None and recorded != features:
        raise RegistrationRefused(
            f"features {features} differ from the estimator's feature_names_in_ {recorded} "
            "(same names in the same order)"
        )
    return features


def check_classifier(estimator, path: Path) -> list:
    """Refuse anything but a fitted scikit-learn classifier; its classes."""
    try:
        check_is_fitted(estimator)
    except NotFittedError:
        raise RegistrationRefused(f"the estimator in {path} is not fitted") from None
    except TypeError:
        raise RegistrationRefused(
            f"{path} holds a {type(estimator).__name__}, not a scikit-learn estimator"
        ) from None
    if not is_classifier(estimator) or not hasattr(estimator, "classes_"):
        raise RegistrationRefused(
            f"{type(estimator).__name__} in {path} is not a classifier: only classifiers are "
            "served (labels and class probabilities)"
        )
    return plain(np.asarray(estimator.classes_).tolist())


def read_eval(path: Path, features: list[str], target: str) -> Dataset:
    """The evaluation set: ``features`` and ``target`` columns of a CSV file."""
    from training.trainers.tabular import CsvTrainer

    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            header = [name.strip() for name in next(csv.reader(fh), [])]
    except FileNotFoundError:
        raise RegistrationRefused(f"evaluation set {path} does not exist") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise RegistrationRefused(f"cannot read the evaluation set {path}: {exc}") from None
    missing = [name for name in [*features, target] if name not in header]
    if missing:
        raise RegistrationRefused(
            f"evaluation set {path.name} lacks column(s) {', '.join(missing)} "
            f"(columns: {', '.join(header)})"
        )
    return CsvTrainer(path=str(path.resolve()), target=target, features=features).load_data()


def predict_labels(estimator, X: np.ndarray) -> np.ndarray:
    """Predictions as strings, like the labels read from a CSV file."""
    return np.asarray([str(label) for label in estimator.predict(X)], dtype=object)


def _probe(estimator, features: list[str], data: Dataset | None, path: Path) -> np.ndarray:
    """Rows to check the estimator on: the evaluation set's, else zeros."""
    X = data.X if data is not None else np.zeros((2, len(features)))
    try:
        estimator.predict(X)
    except Exception as exc:
        raise RegistrationRefused(
            f"the estimator in {path} cannot predict rows of the {len(features)} features "
            f"{features}: {type(exc).__name__}: {exc}"
        ) from None
    return X


def _production(
    store: ModelStore, settings: Settings, version: int | None, features: list[str], data: Dataset
) -> ModelMetadata | None:
    """Production's metadata with its metric computed on the evaluation set (when it takes
    the same features; the gate rejects a switch of features anyway)."""
    if version is None:
        return None
    try:
        meta, estimator = load_model(store, version, settings)
    except MLOpsError as exc:
        raise RegistrationRefused(
            f"cannot score production v{version} on the evaluation set: {exc.message}; "
            "register without --eval and promote explicitly"
        ) from None
    if meta.feature_names != features:
        return meta
    return meta.model_copy(update={"metrics": score_all(data.y, predict_labels(estimator, data.X))})


def register_file(
    settings: Settings,
    store: ModelStore,
    path: Path,
    *,
    features: str | None = None,
    eval_csv: Path | None = None,
    target: str | None = None,
    fmt: str | None = None,
    promote: bool = False,
    trust: bool = False,
    actor: str = "unknown",
) -> Registered:
    """Check ``path``, register it as a new version, and gate or promote it.

    With an evaluation set, the new version and production are scored on it with the model's
    metric and the gate decides, as after training. Without one the version is registered
    only, unless ``promote`` is set or the model has no production version yet.
    """
    name = store.model_name
    if not re.fullmatch(MODEL_NAME, name):
        raise RegistrationRefused(f"{name!r} is not a model name: {MODEL_NAME_RULE}")
    if eval_csv is not None and not target:
        raise RegistrationRefused("--eval needs --target, the column of the true labels")
    if eval_csv is not None and promote:
        raise RegistrationRefused("--promote and --eval exclude each other: the gate decides")
    store.keys.require_signer()
    cfg = settings.models.get(name, settings.training)  # a model without a table: [training]'s
    metric, margin = str(cfg.metric), float(cfg.promotion_margin)

    fmt = file_format(path, fmt)
    allow_mismatch = bool(settings.training.allow_sklearn_mismatch)
    estimator, data = load_file(path, fmt, trust, allow_mismatch)
    classes = check_classifier(estimator, path)
    names = feature_list(features, estimator)
    evaluation = read_eval(Path(eval_csv), names, str(target)) if eval_csv is not None else None
    X_check = _probe(estimator, names, evaluation, path)
    started_from = store.production_version()
    production = None
    if evaluation is not None:  # scored before anything is written: it may refuse
        production = _production(store, settings, started_from, names, evaluation)
    artifact = save_artifact(estimator, store.artifact_format, X_check, type(estimator).__name__)
    source = SourceFile(path=str(path.resolve()), format=fmt, sha256=sha256_hex(data))
    monitoring = settings.monitoring_of(name)
    described = _metadata(store, estimator, classes, names, evaluation, source, monitoring)
    meta = store.register(artifact, described)
    store.audit(meta.version, "registered", actor, f"from {path.name} ({fmt})")
    logger.info("registered {} v{} from {}", name, meta.version, path)

    decision = None
    if evaluation is not None:
        decision = gate_and_promote(store, meta, production, started_from, metric, margin, actor)
        outcome, reason = decision.decision, decision.reason
    elif promote or started_from is None:
        store.promote(meta.version, actor=actor, expected=started_from)
        outcome = "promoted"
        reason = (
            "first version: no production model to beat"
            if started_from is None
            else "--promote, without an evaluation set"
        )
    else:
        outcome = "registered"
        reason = (
            f"not promoted: production stays v{started_from} (give --eval to gate it, "
            f"--promote to promote it, or `python -m training promote --model {name} "
            f"{meta.version}`)"
        )
    record_decision(store, meta.version, decision)
    return Registered(name, meta.version, outcome, reason)


def _metadata(
    store: ModelStore,
    estimator,
    classes: list,
    features: list[str],
    evaluation: Dataset | None,
    source: SourceFile,
    monitoring: MonitoringSettings,
) -> ModelMetadata:
    """What a registered version records; metrics, confusion matrix and the reference profile
    of drift monitoring from the evaluation set, when there is one."""
    metrics, matrix, profile = {}, None, None
    if evaluation is not None:
        y_pred = predict_labels(estimator, evaluation.X)
        metrics = score_all(evaluation.y, y_pred)
        matrix = confusion(evaluation.y, y_pred, [str(c) for c in classes])
        profile = build_profile(
            evaluation.X,
            features,
            y_pred,
            classes,
            bins=int(monitoring.profile_bins),
            sample_size=int(monitoring.profile_sample),
            source="evaluation set",
        )
    return ModelMetadata(
        name=store.model_name,
        trainer=TRAINER,
        params=_params(estimator),
        metrics=metrics,
        features=[FeatureSpec(name=name) for name in features],
        classes=classes,
        data_fingerprint=evaluation.fingerprint if evaluation is not None else "",
        n_test=evaluation.n_rows if evaluation is not None else 0,
        trained_at=datetime.now(UTC).isoformat(),
        python_version=platform.python_version(),
        sklearn_version=sklearn.__version__,
        joblib_version=joblib.__version__,
        numpy_version=np.__version__,
        artifact_file=ARTIFACT_FILES[store.artifact_format],
        artifact_format=store.artifact_format,
        confusion_matrix=matrix,
        source=source,
        reference_profile=profile,
    )


def _params(estimator) -> dict:
    """The estimator's (nested) parameters that are plain values, for the card."""
    scalars = (str, int, float, bool, type(None))
    return plain(
        {k: v for k, v in estimator.get_params(deep=True).items() if isinstance(v, scalars)}
    )

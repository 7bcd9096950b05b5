"""The model call on a batch of predict jobs: plain functions, unit-tested without Celery.

A message from the gateway carries a group of jobs: ``{"job_id", "request_id", "owner",
"rows", "features", "expires_at"}`` (``owner``: the API key's fingerprint, kept in the result
so that only that key reads it). All rows of all jobs go through the model in one scikit-learn
call; if that call fails, each job is retried alone so only the failing jobs get an error.
"""

from __future__ import annotations

import numpy as np
import sklearn

from core.jobs import predict_failure, predict_success
from workers.model_cache import LoadedModel


def column_order(model: LoadedModel, features: list[str] | None) -> list[int] | None:
    """Column order that maps the job's feature order onto the model's, or None if it can't."""
    expected = model.feature_names
    if features is None or features == expected:
        return list(range(len(expected)))
    if sorted(features) != sorted(expected):
        return None
    position = {name: i for i, name in enumerate(features)}
    return [position[name] for name in expected]


# Classifiers whose predict() is the class of highest predict_proba(), so one pass through
# the pipeline gives both (tests/unit/workers/test_inference_argmax.py checks each on data).
PREDICT_IS_ARGMAX_PROBA = frozenset(
    {
        "DecisionTreeClassifier",
        "ExtraTreesClassifier",
        "GaussianNB",
        "GradientBoostingClassifier",
        "KNeighborsClassifier",
        "LogisticRegression",
        "RandomForestClassifier",
    }
)


def predict_is_argmax_proba(estimator) -> bool:
    final = estimator[-1] if hasattr(estimator, "steps") else estimator
    return type(final).__name__ in PREDICT_IS_ARGMAX_PROBA and hasattr(final, "classes_")


def _predict(model: LoadedModel, matrix: np.ndarray) -> tuple[list, list | None]:
    estimator = model.estimator
    # scikit-learn's own input checks cost more than a small batch's prediction; the one
    # that matters (messages may come from other producers) is done here, vectorised.
    if not np.isfinite(matrix).all():
        raise ValueError("Input contains NaN or infinity")
    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        if not hasattr(estimator, "predict_proba"):
            return estimator.predict(matrix).tolist(), None
        probabilities = estimator.predict_proba(matrix)
        if predict_is_argmax_proba(estimator):
            predictions = estimator.classes_.take(probabilities.argmax(axis=1)).tolist()
        else:
            predictions = estimator.predict(matrix).tolist()
    return predictions, np.round(probabilities, 6).tolist()


def expired(job: dict, now: float) -> bool:
    deadline = job.get("expires_at")
    return deadline is not None and now > deadline


def predict_jobs(model: LoadedModel, jobs: list[dict]) -> list[dict]:
    """One result per job, in order; one scikit-learn call for all jobs that can share it."""
    results: list[dict | None] = [None] * len(jobs)
    blocks, owners = [], []
    for index, job in enumerate(jobs):
        columns = column_order(model, job.get("features"))
        rows = job.get("rows") or []
        try:
            block = np.asarray(rows, dtype=np.float64)
            if block.ndim != 2 or columns is None or block.shape[1] != len(columns):
                raise ValueError
        except (TypeError, ValueError):
            results[index] = predict_failure(
                job,
                "schema_mismatch",
                f"model {model.name} v{model.version} expects rows of the features "
                f"{model.feature_names}",
                model.name,
                model.version,
            )
            continue
        blocks.append(block[:, columns] if columns != list(range(len(columns))) else block)
        owners.append(index)
    if blocks:
        try:
            predictions, probabilities = _predict(model, np.vstack(blocks))
            name, version, classes = model.name, model.version, model.metadata.classes
            start = 0
            for index, block in zip(owners, blocks, strict=True):
                stop = start + len(block)
                probs = probabilities[start:stop] if probabilities is not None else None
                results[index] = predict_success(
                    jobs[index], name, version, predictions[start:stop], probs, classes
                )
                start = stop
        except Exception:
            for index, block in zip(owners, blocks, strict=True):
                results[index] = _predict_one(model, jobs[index], block)
    return [r for r in results if r is not None]


def _predict_one(model: LoadedModel, job: dict, block: np.ndarray) -> dict:
    try:
        predictions, probabilities = _predict(model, block)
    except Exception as exc:  # the model rejected this job's rows; the others are unaffected
        return predict_failure(
            job, "prediction_error", f"{type(exc).__name__}: {exc}", model.name, model.version
        )
    return predict_success(
        job, model.name, model.version, predictions, probabilities, model.metadata.classes
    )

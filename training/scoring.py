"""Evaluation scores of a trained model: those the gate may compare (settings.training.metric)
and the confusion matrix. (The Prometheus metrics are app/metrics.py and workers/metrics.py.)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score

METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": accuracy_score,
    "f1_macro": lambda y_true, y_pred: f1_score(y_true, y_pred, average="macro", zero_division=0),
    "balanced_accuracy": balanced_accuracy_score,
}


def score_all(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    return {name: float(fn(y_true, y_pred)) for name, fn in METRICS.items()}


def confusion(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> list[list[int]]:
    """Rows are the true class, columns the predicted class, both in ``classes`` order."""
    matrix = confusion_matrix(y_true, y_pred, labels=classes)
    return [[int(v) for v in row] for row in matrix]

"""Live quality: the gate's metrics over (prediction, true label) pairs, in plain Python.

The gateway computes them (it never imports scikit-learn), so these are scikit-learn's
definitions written out, checked against scikit-learn in tests/unit/core/test_quality.py:
accuracy; macro F1 over the labels seen in either column (zero_division=0); balanced
accuracy, the mean recall over the true labels seen.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson

from core.errors import MLOpsError

METRICS = ("accuracy", "f1_macro", "balanced_accuracy")


def scores(pairs: Sequence[tuple[Any, Any]]) -> dict[str, float]:
    """Every metric of ``pairs`` of (predicted, true); empty for no pairs."""
    if not pairs:
        return {}
    hits = Counter(truth for predicted, truth in pairs if predicted == truth)
    true_counts = Counter(truth for _, truth in pairs)
    predicted_counts = Counter(predicted for predicted, _ in pairs)
    labels = set(true_counts) | set(predicted_counts)
    f1 = [
        2 * hits[label] / (true_counts[label] + predicted_counts[label]) if hits[label] else 0.0
        for label in labels
    ]
    recalls = [hits[label] / count for label, count in true_counts.items()]
    return {
        "accuracy": sum(hits.values()) / len(pairs),
        "f1_macro": sum(f1) / len(f1),
        "balanced_accuracy": sum(recalls) / len(recalls),
    }


# -- history: one point per flush with new labels, kept beside the version (its model card's chart)
HISTORY_FILE = "live_quality.json"
HISTORY_POINTS = 1000


def read_history(store, version: int) -> list[dict]:
    """The live-quality points of ``version``, oldest first ([] when none yet)."""
    try:
        return orjson.loads(store.read_file(version, HISTORY_FILE))["points"]
    except (MLOpsError, OSError, ValueError, KeyError, TypeError):
        return []


def append_history(store, version: int, point: dict) -> list[dict]:
    """Add ``point`` (``at``: unix seconds, ``labelled``, each metric) to ``version``'s
    history, keeping the last :data:`HISTORY_POINTS`; return the history."""
    points = [*read_history(store, version), point][-HISTORY_POINTS:]
    store.write_file(version, HISTORY_FILE, orjson.dumps({"points": points}))
    return points

"""The reference profile of a version (core/monitoring.py): what drift monitoring compares the
recent inputs with, built from the rows the version was trained (or evaluated) on.

Per feature: quantile bin edges (deciles by default) and the rows' share in each bin, for the
population stability index; a sample of the values, for the KS test. And the share of each
class the version predicts on those rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from core.monitoring import FeatureProfile, ReferenceProfile

SAMPLE_SEED = 0  # the KS sample is drawn the same way every time: same data, same profile


def bin_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """The ``bins - 1`` inner quantile edges of ``values``, equal ones merged.

    Each edge is a value of the data (the inverted CDF, not an interpolation between two), so
    a discrete feature's bins hold its values and nothing between them."""
    levels = np.arange(1, bins) / bins
    return np.unique(np.quantile(values, levels, method="inverted_cdf"))


def bin_shares(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Share of ``values`` in each right-closed bin ``(-inf, e0], (e0, e1], ..., (e_last, inf)``."""
    values = np.asarray(values, dtype=np.float64)
    index = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="left")
    counts = np.bincount(index, minlength=len(edges) + 1)
    return counts / max(len(values), 1)


def class_shares(predicted: Sequence, classes: Sequence) -> dict[str, float]:
    """Share of each of ``classes`` (and of any other label predicted) among ``predicted``."""
    counts = Counter(str(label) for label in predicted)
    total = max(sum(counts.values()), 1)
    names = [str(c) for c in classes]
    names += sorted(set(counts) - set(names))
    return {name: counts[name] / total for name in names}


def build_profile(
    X: np.ndarray,
    feature_names: Sequence[str],
    predicted: Sequence,
    classes: Sequence,
    *,
    bins: int,
    sample_size: int,
    source: str,
) -> ReferenceProfile:
    """The profile of the rows ``X`` (one column per feature) and the labels predicted for them."""
    X = np.asarray(X, dtype=np.float64)
    rng = np.random.default_rng(SAMPLE_SEED)
    keep = np.arange(len(X))
    if len(X) > sample_size:
        keep = np.sort(rng.choice(len(X), size=sample_size, replace=False))
    features = []
    for j, name in enumerate(feature_names):
        column = X[:, j]
        edges = bin_edges(column, bins)
        features.append(
            FeatureProfile(
                name=str(name),
                edges=edges.tolist(),
                shares=bin_shares(column, edges).tolist(),
                sample=np.sort(column[keep]).tolist(),
            )
        )
    return ReferenceProfile(
        rows=len(X), source=source, features=features, classes=class_shares(predicted, classes)
    )

"""Drift of recent inputs from a version's reference profile (core/monitoring.py): plain
functions of numbers, no Redis, no Celery.

- **Population stability index** per feature over the profile's quantile bins, and over the
  predicted classes: ``sum((a - e) * ln(a / e))`` with ``e`` the reference share of a bin and
  ``a`` the recent one. A share of 0 would make a term infinite: shares below
  :data:`EPSILON` count as ``EPSILON`` (both sides, not renormalised), so a bin that emptied
  (or filled from nothing) adds a large but finite term, ~4.6 for half the rows.
- **Two-sample KS test** per feature (``scipy.stats.ks_2samp``) of the recent values against
  the sample of training values the profile keeps: its statistic is the largest gap between
  the two empirical CDFs, its p-value how likely that gap is when both come from one
  distribution. A sample rather than the CDF rebuilt from the bins: the test then needs no
  continuity assumption, and ties (discrete features) are handled by scipy.

A feature **drifts** when its PSI is above ``psi_threshold`` (the shift is large enough to
matter) and its KS p-value below ``ks_p_value`` (it is not sampling noise: PSI alone rises
on small windows, the KS test alone flags trivial shifts on large ones). The predicted
classes drift when their PSI is above ``psi_threshold``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import ks_2samp

from core.monitoring import DRIFT, OK, FeatureDrift, FeatureProfile, ReferenceProfile
from training.profile import bin_shares, class_shares

EPSILON = 1e-4


def psi(expected: Sequence[float], actual: Sequence[float], epsilon: float = EPSILON) -> float:
    """The population stability index of ``actual`` shares against ``expected`` ones."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), epsilon)
    a = np.maximum(np.asarray(actual, dtype=np.float64), epsilon)
    return float(np.sum((a - e) * np.log(a / e)))


def feature_psi(feature: FeatureProfile, values: np.ndarray) -> float:
    return psi(feature.shares, bin_shares(values, feature.edges))


def ks_test(reference: Sequence[float], values: Sequence[float]) -> tuple[float, float]:
    """``(statistic, p-value)`` of the two-sample KS test (two-sided)."""
    result = ks_2samp(np.asarray(reference), np.asarray(values))
    return float(result.statistic), float(result.pvalue)


def class_psi(reference: dict[str, float], predicted: Sequence) -> float:
    """PSI of the predicted labels' shares against the reference's (labels it never predicted
    count too)."""
    recent = class_shares(predicted, list(reference))
    return psi([reference.get(name, 0.0) for name in recent], list(recent.values()))


@dataclass(frozen=True)
class Assessment:
    status: str  # "ok" | "drift"
    features: list[FeatureDrift]
    class_psi: float | None
    drifted_features: list[str]

    @property
    def largest_psi(self) -> float:
        values = [f.psi for f in self.features]
        if self.class_psi is not None:
            values.append(self.class_psi)
        return max(values, default=0.0)


def assess(
    profile: ReferenceProfile,
    rows: np.ndarray,
    predicted: Sequence | None,
    psi_threshold: float,
    ks_p_value: float,
) -> Assessment:
    """Compare ``rows`` (one column per profiled feature) and the labels predicted for them
    (None: not known) with ``profile``."""
    rows = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(profile.features))
    features = []
    for j, feature in enumerate(profile.features):
        values = rows[:, j]
        index = feature_psi(feature, values)
        statistic, p_value = ks_test(feature.sample, values)
        drifted = index > psi_threshold and p_value < ks_p_value
        features.append(
            FeatureDrift(
                name=feature.name,
                psi=index,
                ks_statistic=statistic,
                ks_p_value=p_value,
                drifted=drifted,
            )
        )
    classes = None
    if predicted is not None and profile.classes:
        classes = class_psi(profile.classes, predicted)
    drifted = [f.name for f in features if f.drifted]
    classes_drifted = classes is not None and classes > psi_threshold
    status = DRIFT if drifted or classes_drifted else OK
    return Assessment(status, features, classes, drifted)

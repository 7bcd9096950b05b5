"""workers/drift.py against values computed by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import numpy as np
import pytest

from core.monitoring import FeatureProfile, ReferenceProfile
from workers.drift import EPSILON, assess, class_psi, ks_test, psi


def test_psi_of_a_shift_between_two_bins():
    # (0.25 - 0.5) ln(0.25 / 0.5) + (0.75 - 0.5) ln(0.75 / 0.5) = 0.25 ln 2 + 0.25 ln 1.5
    # = 0.25 ln 3 = 0.25 x 1.0986123 = 0.2746531
    assert psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.2746531, abs=1e-7)


def test_psi_of_identical_shares_is_zero():
    assert psi([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0


def test_psi_of_an_emptied_bin_uses_epsilon():
    # the empty share counts as 1e-4: (1 - 0.5) ln(1 / 0.5) + (1e-4 - 0.5) ln(1e-4 / 0.5)
    # = 0.5 ln 2 + 0.4999 ln 5000 = 0.3465736 + 0.4999 x 8.5171932 = 4.6043194
    assert EPSILON == 1e-4
    assert psi([0.5, 0.5], [1.0, 0.0]) == pytest.approx(4.6043194, abs=1e-6)


def test_ks_of_two_overlapping_samples():
    # ECDFs of {1,2,3,4} and {3,4,5,6} differ most at 2 (0.5 vs 0) and 4 (1 vs 0.5): D = 0.5.
    # Exact p-value: of the C(8,4) = 70 orders of merging the two samples, those that keep
    # |i - j| <= 1 return to the diagonal every two steps, 2 ways each time: 2^4 = 16.
    # P(D >= 0.5) = 1 - 16/70 = 0.7714286
    statistic, p_value = ks_test([1, 2, 3, 4], [3, 4, 5, 6])
    assert statistic == 0.5
    assert p_value == pytest.approx(0.7714286, abs=1e-7)


def test_ks_of_two_disjoint_samples():
    # D = 1; only the 2 orders "all of one sample first" of the 70 reach it: 2/70 = 0.0285714
    statistic, p_value = ks_test([1, 2, 3, 4], [5, 6, 7, 8])
    assert statistic == 1.0
    assert p_value == pytest.approx(0.0285714, abs=1e-7)


def test_class_psi_of_a_shift():
    # shares a: 0.75, b: 0.25 against 0.5 each: 0.25 ln 1.5 + 0.25 ln 2 = 0.25 ln 3
    assert class_psi({"a": 0.5, "b": 0.5}, ["a", "a", "a", "b"]) == pytest.approx(0.2746531)


def test_class_psi_counts_a_label_the_reference_never_predicted():
    # a: 0.5 vs 0.5 -> 0; b: 1e-4 vs 0.5 and c: 0.5 vs 1e-4 -> 2 x 0.4999 ln 5000
    # = 0.9998 x 8.5171932 = 8.5154898
    assert class_psi({"a": 0.5, "b": 0.5}, ["a", "c"]) == pytest.approx(8.5154898, abs=1e-6)


# Training values 1..6 of two features: bins (-inf, 2], (2, 4], (4, inf), a third each.
PROFILE = ReferenceProfile(
    rows=6,
    source="test",
    features=[
        FeatureProfile(name=name, edges=[2, 4], shares=[1 / 3] * 3, sample=[1, 2, 3, 4, 5, 6])
        for name in ("a", "b")
    ],
    classes={"x": 0.5, "y": 0.5},
)
# a moved to 5 and 6 only; b keeps 1..6.
ROWS = np.column_stack([[5, 6] * 30, [1, 2, 3, 4, 5, 6] * 10])


def test_a_shifted_feature_drifts_and_an_unchanged_one_does_not():
    result = assess(PROFILE, ROWS, ["x", "y"] * 30, psi_threshold=0.2, ks_p_value=0.01)
    a, b = result.features
    # a: shares 0, 0, 1 against 1/3 each:
    # 2 x (1e-4 - 1/3) ln(3e-4) + (2/3) ln 3 = 2 x 0.3332333 x 8.1117281 + 0.6666667 x 1.0986123
    # = 5.4061958 + 0.7324082 = 6.1386040; KS: ECDFs at 4: 4/6 against 0, D = 2/3
    assert a.psi == pytest.approx(6.1386040, abs=1e-6)
    assert a.ks_statistic == pytest.approx(2 / 3) and a.ks_p_value < 0.01 and a.drifted
    assert (b.psi, b.ks_statistic, b.ks_p_value, b.drifted) == (0.0, 0.0, 1.0, False)
    assert result.class_psi == 0.0
    assert (result.status, result.drifted_features) == ("drift", ["a"])
    assert result.largest_psi == a.psi


def test_a_large_psi_that_the_ks_test_does_not_confirm_is_not_drift():
    result = assess(PROFILE, ROWS, None, psi_threshold=0.2, ks_p_value=1e-300)
    assert result.features[0].psi > 6 and not result.features[0].drifted
    assert (result.status, result.drifted_features, result.class_psi) == ("ok", [], None)


def test_the_predicted_classes_alone_can_drift():
    unchanged = np.column_stack([[1, 2, 3, 4, 5, 6] * 10] * 2)
    result = assess(PROFILE, unchanged, ["x"] * 45 + ["y"] * 15, 0.2, 0.01)
    # x: 0.75, y: 0.25 against 0.5 each: 0.25 ln 3 = 0.2746531 > 0.2
    assert result.class_psi == pytest.approx(0.2746531)
    assert (result.status, result.drifted_features) == ("drift", [])

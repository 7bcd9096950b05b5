"""core/quality.py against scikit-learn's own metrics (the gateway cannot import it)."""

from __future__ import annotations

import random

import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from core.quality import METRICS, scores


def sklearn_scores(pairs):
    predicted = [p for p, _ in pairs]
    truth = [t for _, t in pairs]
    return {
        "accuracy": accuracy_score(truth, predicted),
        "f1_macro": f1_score(truth, predicted, average="macro", zero_division=0),
        "balanced_accuracy": balanced_accuracy_score(truth, predicted),
    }


def test_hand_computed_values():
    # truth a a b b c, predicted a b b b a: hits a1 b2; recall a .5 b 1 c 0
    pairs = [("a", "a"), ("b", "a"), ("b", "b"), ("b", "b"), ("a", "c")]
    found = scores(pairs)
    assert found["accuracy"] == pytest.approx(3 / 5)
    assert found["balanced_accuracy"] == pytest.approx((0.5 + 1 + 0) / 3)
    # F1: a 2*1/(2+2)=.5, b 2*2/(2+3)=.8, c 0
    assert found["f1_macro"] == pytest.approx((0.5 + 0.8 + 0) / 3)


@pytest.mark.parametrize("seed", range(20))
def test_the_same_as_scikit_learn(seed):
    """Random windows, with classes only predicted or only true now and then."""
    rng = random.Random(seed)
    classes = ["setosa", "versicolor", "virginica", "other"][: rng.randint(2, 4)]
    pairs = [(rng.choice(classes), rng.choice(classes[:-1] or classes)) for _ in range(50)]
    found, expected = scores(pairs), sklearn_scores(pairs)
    assert set(found) == set(METRICS)
    for metric in METRICS:
        assert found[metric] == pytest.approx(expected[metric]), metric


def test_no_pairs_no_scores():
    assert scores([]) == {}

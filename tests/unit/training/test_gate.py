"""Promotion gate decisions."""

from __future__ import annotations

import pytest

from core.store import ModelMetadata
from tests.factories import metadata
from training.gate import FeedbackScores, decide


def meta(version: int, accuracy: float, features=("a", "b"), **metrics) -> ModelMetadata:
    return metadata(features, version=version, metrics={"accuracy": accuracy, **metrics})


def test_training_gate_first_version_always_passes():
    decision = decide(meta(1, 0.1), None, "accuracy", margin=0.5)
    assert decision.decision == "promoted"
    assert decision.production is None and decision.production_version is None
    assert decision.candidate == 0.1 and decision.margin == 0.5
    assert "first version" in decision.reason


@pytest.mark.parametrize(
    ("candidate", "production", "margin", "expected"),
    [
        (0.90, 0.90, 0.0, "promoted"),
        (0.95, 0.90, 0.05, "promoted"),
        (0.3, 0.1 + 0.2, 0.0, "promoted"),  # float noise is not a regression
        (0.94, 0.90, 0.05, "rejected"),
        (0.89, 0.90, 0.0, "rejected"),
        (0.80, 0.90, -0.2, "promoted"),
    ],
)
def test_training_gate_margin(candidate, production, margin, expected):
    decision = decide(meta(2, candidate), meta(1, production), "accuracy", margin)
    assert decision.decision == expected
    assert decision.production == production
    assert decision.production_version == 1
    assert decision.metric == "accuracy"


def test_training_gate_uses_configured_metric():
    candidate = meta(2, 0.99, f1_macro=0.5)
    production = meta(1, 0.5, f1_macro=0.9)
    assert decide(candidate, production, "accuracy").decision == "promoted"
    rejected = decide(candidate, production, "f1_macro")
    assert rejected.decision == "rejected"
    assert "f1_macro 0.5000 < production 0.9000" in rejected.reason


def test_training_gate_rejects_a_changed_feature_schema():
    decision = decide(meta(2, 1.0, features=("x", "y")), meta(1, 0.5), "accuracy")
    assert decision.decision == "rejected"
    assert "differ" in decision.reason


def test_training_gate_production_without_the_metric_passes():
    decision = decide(meta(2, 0.5, f1_macro=0.5), meta(1, 0.9), "f1_macro")
    assert decision.decision == "promoted"
    assert decision.production is None


# -- recent feedback ---------------------------------------------------------------------------
def test_enough_recent_feedback_decides_over_the_held_out_splits():
    """Production looks better on its own split, the candidate on the rows both now see."""
    recent = FeedbackScores(rows=40, candidate=0.9, production=0.5)
    decision = decide(meta(2, 0.8), meta(1, 0.95), "accuracy", 0.0, recent, min_rows=20)
    assert decision.decision == "promoted" and decision.decided_on == "recent feedback"
    assert (decision.candidate, decision.production) == (0.8, 0.95)  # both kept
    assert (decision.feedback_candidate, decision.feedback_production) == (0.9, 0.5)
    assert "40 most recent labelled rows" in decision.reason


def test_worse_on_recent_feedback_is_rejected_even_if_better_held_out():
    recent = FeedbackScores(rows=40, candidate=0.6, production=0.7)
    decision = decide(meta(2, 0.99), meta(1, 0.5), "accuracy", 0.0, recent, min_rows=20)
    assert decision.decision == "rejected" and decision.decided_on == "recent feedback"


def test_the_margin_applies_to_recent_feedback_too():
    recent = FeedbackScores(rows=40, candidate=0.75, production=0.7)
    assert decide(meta(2, 1), meta(1, 1), "accuracy", 0.1, recent, 20).decision == "rejected"


def test_too_little_recent_feedback_is_shown_but_does_not_decide():
    recent = FeedbackScores(rows=5, candidate=0.0, production=1.0)
    decision = decide(meta(2, 0.9), meta(1, 0.9), "accuracy", 0.0, recent, min_rows=20)
    assert decision.decision == "promoted" and decision.decided_on == "held-out split"
    assert decision.feedback_rows == 5 and "fewer than 20" in decision.reason


def test_a_changed_feature_schema_is_rejected_whatever_the_feedback_says():
    recent = FeedbackScores(rows=40, candidate=1.0, production=0.0)
    decision = decide(meta(2, 1.0, features=("x", "y")), meta(1, 0.5), "accuracy", 0, recent, 1)
    assert decision.decision == "rejected" and "differ" in decision.reason

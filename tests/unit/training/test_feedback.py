"""Data versions: a run learns from the base data plus the labelled feedback, records their
fingerprints, skips when there is nothing new to learn, and gates on recent feedback."""

from __future__ import annotations

import random

import fakeredis
import numpy as np
import pytest

from core.datasets import flush_labels
from core.feedback import count_key, trained_key
from core.settings import get_settings
from core.single_flight import RunLease
from core.store import open_store
from tests.factories import label_prediction, log_prediction, settings_with
from training.data import make_dataset
from training.feedback import combine, load_feedback
from training.pipeline import NOTHING_NEW, run_training

IRIS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@pytest.fixture
def client():
    return fakeredis.FakeRedis()


def lease(client) -> RunLease:
    return RunLease(client, "iris", "job", 30)


def shifted_rows(n: int, seed: int = 0) -> list[list[float]]:
    """Flowers unlike any of the base data (petals of 9 cm): production calls them virginica."""
    rng = random.Random(seed)
    return [[7.5 + rng.random(), 3.0, 9.0 + rng.random(), 3.0 + rng.random()] for _ in range(n)]


def label_all(client, rows, label: str, start: int = 0) -> None:
    for i, row in enumerate(rows, start):
        log_prediction(client, f"job-{i}", [row], ["virginica"], at=1000.0 + i)
        label_prediction(client, f"job-{i}", label, at=2000.0 + i)


# -- fingerprints and the combined data -------------------------------------------------------
def test_the_feedback_fingerprint_changes_with_any_label_and_only_then(client):
    run_training(get_settings())  # v1: the version whose features the rows were logged with
    store = open_store(get_settings())
    label_all(client, shifted_rows(3), "setosa")
    flush_labels(client, store, 10)
    first = load_feedback(store, IRIS)
    assert first.rows == 3 and first.until == "1970-01-01T00:33:22+00:00"
    assert load_feedback(store, IRIS).fingerprint == first.fingerprint  # read again: the same
    label_all(client, shifted_rows(1, seed=9), "versicolor", start=3)
    flush_labels(client, store, 10)
    second = load_feedback(store, IRIS)
    assert second.rows == 4 and second.fingerprint != first.fingerprint


def test_rows_logged_with_other_features_are_left_out(client):
    run_training(get_settings())
    store = open_store(get_settings())
    label_all(client, shifted_rows(2), "setosa")
    flush_labels(client, store, 10)
    other = load_feedback(store, ["a", "b", "c", "d"])
    assert other.rows == 0 and other.dropped == 2


def test_without_feedback_the_data_and_its_fingerprint_are_the_base_datas():
    base = make_dataset(np.ones((4, 2)), ["a", "b", "a", "b"], ["x", "y"], source="t")
    empty = load_feedback_of_nothing()
    data, version = combine(base, empty)
    assert data is base and data.fingerprint == base.fingerprint
    assert version.base.rows == 4 and version.feedback.rows == 0 and version.feedback.until is None


def load_feedback_of_nothing():
    return load_feedback(open_store(get_settings()), ["x", "y"])


# -- a training run with feedback -------------------------------------------------------------
def test_a_run_learns_from_the_labels_and_records_its_data_version(client):
    run_training(get_settings())
    label_all(client, shifted_rows(30), "setosa")  # still waiting in Redis
    outcome = run_training(get_settings(), lease=lease(client), trigger="labels")
    assert outcome.version == 2
    meta = open_store(get_settings()).metadata(2)
    assert meta.trigger == "labels"
    assert meta.data.base.rows == 150 and meta.data.base.source == "sklearn.datasets.load_iris"
    assert meta.data.feedback.rows == 30 and meta.data.feedback.until is not None
    assert meta.data_fingerprint not in (meta.data.base.fingerprint, meta.data.feedback.fingerprint)
    assert meta.n_train + meta.n_test == 180
    # the run flushed the labels first and noted how many there were for the labels trigger
    assert client.xlen("mlops:labels:iris") == 0
    assert int(client.get(trained_key("iris"))) == int(client.get(count_key("iris"))) == 30


def test_nothing_new_to_learn_is_skipped_until_a_label_arrives(client):
    run_training(get_settings())
    skipped = run_training(get_settings(), lease=lease(client))
    assert skipped.decision == "skipped" and skipped.version is None
    assert skipped.reason.startswith(NOTHING_NEW) and "v1 (production)" in skipped.reason
    assert open_store(get_settings()).versions() == [1]
    label_all(client, shifted_rows(1), "setosa")
    assert run_training(get_settings(), lease=lease(client)).version == 2
    again = run_training(get_settings(), lease=lease(client))
    assert again.decision == "skipped" and "v2" in again.reason  # the newest, even if rejected
    assert run_training(get_settings(), lease=lease(client), force=True).version == 3


def test_another_recipe_on_the_same_data_is_something_new(monkeypatch):
    run_training(get_settings())
    settings = settings_with(monkeypatch, TRAINING__ESTIMATOR__PARAMS='@json {"C": 0.5}')
    assert run_training(settings).version == 2


# -- the gate on recent feedback ---------------------------------------------------------------
def test_a_candidate_that_learned_the_shift_beats_production_on_recent_feedback(client):
    run_training(get_settings())
    label_all(client, shifted_rows(150), "setosa")
    outcome = run_training(get_settings(), lease=lease(client))
    gate = open_store(get_settings()).metadata(2).gate
    assert gate.decided_on == "recent feedback", gate.reason
    assert gate.feedback_rows >= get_settings().feedback.gate_min_rows
    assert gate.feedback_production == 0.0  # production calls them all virginica
    assert gate.feedback_candidate > 0.9
    assert outcome.promoted and "most recent labelled rows" in outcome.reason


def test_too_few_recent_labels_leave_the_decision_to_the_held_out_split(client):
    run_training(get_settings())
    label_all(client, shifted_rows(10), "setosa")  # ~2 land in the held-out split
    run_training(get_settings(), lease=lease(client))
    gate = open_store(get_settings()).metadata(2).gate
    assert gate.decided_on == "held-out split"
    assert 0 < gate.feedback_rows < get_settings().feedback.gate_min_rows
    assert "fewer than" in gate.reason

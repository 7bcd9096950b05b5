"""training/profile.py: the reference profile drift monitoring compares recent inputs with,
and how training and registering keep it in a version's metadata."""

from __future__ import annotations

import numpy as np
import pytest

from core.settings import get_settings
from core.store import open_store
from tests.factories import settings_with
from training.pipeline import run_training
from training.profile import bin_edges, bin_shares, build_profile, class_shares


def test_deciles_of_one_to_twenty_and_their_shares():
    values = np.arange(1, 21, dtype=float)  # 1..20
    edges = bin_edges(values, 10)
    # the q-quantile is the smallest value with at least q * 20 values at or below it
    assert edges.tolist() == [2, 4, 6, 8, 10, 12, 14, 16, 18]
    # (-inf, 2]: 1, 2; (2, 4]: 3, 4; ... (18, inf): 19, 20
    assert bin_shares(values, edges).tolist() == [0.1] * 10


def test_bins_are_right_closed():
    # (-inf, 1], (1, 2], (2, inf): a value on an edge falls in the bin it closes
    assert bin_shares([1.0, 1.0, 1.5, 2.0, 2.5], [1.0, 2.0]).tolist() == [0.4, 0.4, 0.2]


def test_repeated_values_merge_their_edges():
    values = np.array([0.0] * 7 + [1.0] * 3)
    edges = bin_edges(values, 10)
    assert edges.tolist() == [0.0, 1.0]  # nine quantiles (seven 0s, two 1s), two values
    assert bin_shares(values, edges).tolist() == [0.7, 0.3, 0.0]


def test_class_shares_list_every_class_and_any_other_label():
    shares = class_shares(["a", "a", "b", "z"], ["a", "b", "c"])
    assert shares == {"a": 0.5, "b": 0.25, "c": 0.0, "z": 0.25}


def test_profile_of_two_features():
    X = np.column_stack([np.arange(1, 21, dtype=float), np.full(20, 3.0)])
    profile = build_profile(
        X, ["a", "b"], ["x"] * 15 + ["y"] * 5, ["x", "y"], bins=4, sample_size=8, source="test"
    )
    a, b = profile.features
    assert (profile.rows, profile.source) == (20, "test")
    assert a.edges == [5, 10, 15] and a.shares == [0.25] * 4
    assert b.edges == [3.0] and b.shares == [1.0, 0.0]
    assert len(a.sample) == 8 and a.sample == sorted(a.sample)
    assert set(a.sample) <= set(X[:, 0]) and b.sample == [3.0] * 8
    assert profile.classes == {"x": 0.75, "y": 0.25}


def test_the_sample_is_the_same_every_time():
    X = np.random.default_rng(1).normal(size=(1000, 1))
    first = build_profile(X, ["a"], [], [], bins=10, sample_size=50, source="s")
    again = build_profile(X, ["a"], [], [], bins=10, sample_size=50, source="s")
    assert first == again and len(first.features[0].sample) == 50


def test_training_keeps_the_profile_of_its_training_split():
    settings = get_settings()
    run_training(settings)
    meta = open_store(settings).metadata(1)
    profile = meta.reference_profile
    assert profile is not None and profile.rows == meta.n_train == 120
    assert profile.source == "training split"
    assert [f.name for f in profile.features] == meta.feature_names
    for feature in profile.features:
        assert len(feature.shares) == len(feature.edges) + 1 <= 10
        assert sum(feature.shares) == pytest.approx(1.0)
        assert len(feature.sample) == 120  # fewer rows than monitoring.profile_sample
    assert set(profile.classes) == set(meta.classes)
    assert sum(profile.classes.values()) == pytest.approx(1.0)
    assert meta.trigger == "manual" and meta.trigger_detail is None


def test_training_follows_the_profile_settings(monkeypatch):
    settings = settings_with(
        monkeypatch, MONITORING__PROFILE_BINS="4", MONITORING__PROFILE_SAMPLE="30"
    )
    run_training(settings)
    profile = open_store(settings).metadata(1).reference_profile
    assert all(len(f.edges) <= 3 and len(f.sample) == 30 for f in profile.features)


def test_training_records_its_trigger():
    settings = get_settings()
    detail = {"features": ["petal_length"]}
    run_training(settings, trigger="drift", trigger_detail=detail)
    meta = open_store(settings).metadata(1)
    assert (meta.trigger, meta.trigger_detail) == ("drift", detail)


def test_a_registered_version_has_a_profile_of_its_evaluation_set_only(tmp_path):
    from tests.unit.training.test_register import PENGUINS, evaluated, fitted, register, saved

    path = saved(tmp_path, fitted())
    register(path)  # no evaluation set: nothing to describe the data with
    register(path, **evaluated())
    store = open_store(get_settings(), "own")
    assert store.metadata(1).reference_profile is None
    profile = store.metadata(2).reference_profile
    rows = len(PENGUINS.read_text().splitlines()) - 1
    assert profile is not None and (profile.rows, profile.source) == (rows, "evaluation set")
    assert sum(profile.classes.values()) == pytest.approx(1.0)

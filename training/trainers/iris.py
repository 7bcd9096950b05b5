"""Iris classifier on scikit-learn's bundled copy of the data set (no network)."""

from __future__ import annotations

from sklearn.datasets import load_iris

from training.base import Trainer
from training.data import Dataset, make_dataset
from training.registry import register_trainer

# The gateway's request schema uses these names; keep them in this order.
FEATURE_NAMES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@register_trainer("iris")
class IrisTrainer(Trainer):
    """Classes are the species names: setosa, versicolor, virginica."""

    def load_data(self) -> Dataset:
        bunch = load_iris()
        labels = bunch.target_names[bunch.target]
        return make_dataset(bunch.data, labels, FEATURE_NAMES, source="sklearn.datasets.load_iris")

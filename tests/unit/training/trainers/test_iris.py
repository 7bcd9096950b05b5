"""training/trainers/iris.py: the bundled iris data set."""

from __future__ import annotations

import numpy as np

from training.trainers.iris import FEATURE_NAMES, IrisTrainer


def test_training_iris_load_data_names_and_labels():
    data = IrisTrainer().load_data()
    assert data.feature_names == [
        "sepal_length",
        "sepal_width",
        "petal_length",
        "petal_width",
    ]
    assert data.feature_names == FEATURE_NAMES
    assert data.X.shape == (150, 4) and data.X.dtype == np.float64
    assert sorted(set(data.y)) == ["setosa", "versicolor", "virginica"]
    assert len(data.fingerprint) == 64
    assert IrisTrainer().load_data().fingerprint == data.fingerprint

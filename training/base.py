"""The trainer base class: each step of a training run is its own, separately testable method.

load_data -> split -> build_pipeline -> fit -> evaluate -> describe.

Trainers follow scikit-learn's estimator rules (they *are* ``BaseEstimator``s, so ``clone``
and ``get_params`` work): ``__init__`` only stores its keyword arguments, ``fit`` returns
``self``, and everything learned ends in ``_``. Settings are read in :meth:`from_settings`,
never in the constructor.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from core.settings import ModelSettings
from training.data import Dataset, Split
from training.errors import NotEnoughData
from training.estimators import build_estimator, plain
from training.scoring import confusion, score_all

DEFAULT_ESTIMATOR = "sklearn.linear_model.LogisticRegression"
MIN_CLASSES = 2


class Trainer(BaseEstimator, ABC):
    """Base class for trainers; register subclasses with ``@register_trainer("name")``."""

    name: ClassVar[str] = ""

    def __init__(
        self,
        *,
        test_size: float = 0.2,
        random_state: int = 42,
        estimator: str = DEFAULT_ESTIMATOR,
        estimator_params: dict[str, Any] | None = None,
    ):
        self.test_size = test_size
        self.random_state = random_state
        self.estimator = estimator
        self.estimator_params = estimator_params

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def params_from_settings(cls, model: ModelSettings) -> dict[str, Any]:
        """The constructor's arguments from one model's settings (``[models.<name>]``)."""
        return {
            "test_size": float(model.test_size),
            "random_state": int(model.random_state),
            "estimator": str(model.estimator.class_path),
            "estimator_params": plain(model.estimator.params),
        }

    @classmethod
    def from_settings(cls, model: ModelSettings) -> Trainer:
        return cls(**cls.params_from_settings(model))

    # -- steps ------------------------------------------------------------------------------
    @abstractmethod
    def load_data(self) -> Dataset:
        """Read the whole data set: float features, string labels, feature names."""

    def split(self, data: Dataset) -> Split:
        """A stratified train/test split; too little data is a user error, not a traceback."""
        classes = np.unique(data.y)
        if len(classes) < MIN_CLASSES:
            raise NotEnoughData(
                f"need at least {MIN_CLASSES} classes to train a classifier, "
                f"found {len(classes)} in {data.n_rows} rows"
            )
        try:
            X_train, X_test, y_train, y_test, _, test_index = train_test_split(
                data.X,
                data.y,
                np.arange(data.n_rows),
                test_size=self.test_size,
                random_state=self.random_state,
                stratify=data.y,
            )
        except ValueError as exc:
            raise NotEnoughData(
                f"cannot split {data.n_rows} rows with {len(classes)} classes "
                f"(test_size={self.test_size}): {exc}"
            ) from None
        return Split(X_train, X_test, y_train, y_test, test_index)

    def build_pipeline(self) -> Pipeline:
        """Preprocessing plus the configured (allow-listed) estimator, unfitted."""
        return Pipeline(
            [
                ("scaler", StandardScaler()),
                ("estimator", build_estimator(self.estimator, self.estimator_params)),
            ]
        )

    def fit(self, X, y, feature_names: list[str] | None = None) -> Trainer:
        X = np.asarray(X, dtype=np.float64)
        self.pipeline_ = self.build_pipeline().fit(X, y)
        self.classes_ = [str(c) for c in self.pipeline_.classes_]
        self.n_features_in_ = int(X.shape[1])
        self.feature_names_ = (
            list(feature_names)
            if feature_names is not None
            else [f"x{i}" for i in range(self.n_features_in_)]
        )
        return self

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "pipeline_")
        return self.pipeline_.predict(np.asarray(X, dtype=np.float64))

    def evaluate(self, X, y) -> dict[str, float]:
        """Every gate metric on held-out rows; also keeps the confusion matrix."""
        y_pred = self.predict(X)
        self.metrics_ = score_all(np.asarray(y), y_pred)
        self.confusion_matrix_ = confusion(np.asarray(y), y_pred, self.classes_)
        return dict(self.metrics_)

    def describe(self) -> dict[str, Any]:
        check_is_fitted(self, "pipeline_")
        return {
            "features": [{"name": name, "type": "float"} for name in self.feature_names_],
            "classes": list(self.classes_),
            "metrics": dict(getattr(self, "metrics_", {})),
            "confusion_matrix": getattr(self, "confusion_matrix_", None),
        }

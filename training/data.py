"""The in-memory data set every trainer produces, and its fingerprint."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Dataset:
    X: np.ndarray  # (n_rows, n_features) float64
    y: np.ndarray  # (n_rows,) str labels
    feature_names: list[str]
    fingerprint: str
    source: str = ""

    @property
    def n_rows(self) -> int:
        return int(self.X.shape[0])


@dataclass(frozen=True)
class Split:
    X_train: np.ndarray
    X_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    test_index: np.ndarray | None = None  # positions of the test rows in the data set


def fingerprint(X: np.ndarray, y: np.ndarray, feature_names: list[str]) -> str:
    """sha256 of the parsed rows: same numbers and labels, same fingerprint, whatever the file."""
    digest = hashlib.sha256()
    digest.update("\x1f".join(feature_names).encode())
    digest.update(b"\x1e")
    digest.update(np.ascontiguousarray(X, dtype="<f8").tobytes())
    digest.update(b"\x1e")
    digest.update("\x1f".join(str(label) for label in y).encode())
    return digest.hexdigest()


def make_dataset(
    X: np.ndarray, y: np.ndarray, feature_names: list[str], source: str = ""
) -> Dataset:
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray([str(label) for label in y], dtype=object)
    return Dataset(X, y, list(feature_names), fingerprint(X, y, list(feature_names)), source)

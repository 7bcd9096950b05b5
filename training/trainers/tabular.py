"""Train on your own CSV file: path, target, features and estimator all come from settings.

Parsed with the standard-library csv module into numpy arrays (no pandas). Every feature must
be a finite number; the target column holds class labels (read as strings).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from core.settings import ModelSettings, resolve_path
from training.base import DEFAULT_ESTIMATOR, Trainer
from training.data import Dataset, make_dataset
from training.errors import (
    DataFileNotFound,
    EmptyDataset,
    MalformedData,
    NonNumericFeature,
    UnknownColumn,
)
from training.estimators import plain
from training.registry import register_trainer


@register_trainer("csv")
class CsvTrainer(Trainer):
    """``features`` empty or None means every column except ``target``."""

    def __init__(
        self,
        *,
        path: str = "",
        target: str = "",
        features: list[str] | None = None,
        test_size: float = 0.2,
        random_state: int = 42,
        estimator: str = DEFAULT_ESTIMATOR,
        estimator_params: dict[str, Any] | None = None,
    ):
        super().__init__(
            test_size=test_size,
            random_state=random_state,
            estimator=estimator,
            estimator_params=estimator_params,
        )
        self.path = path
        self.target = target
        self.features = features

    @classmethod
    def params_from_settings(cls, model: ModelSettings) -> dict[str, Any]:
        csv_settings = model.csv
        return {
            **super().params_from_settings(model),
            "path": str(csv_settings.path),
            "target": str(csv_settings.target),
            "features": plain(csv_settings.features),
        }

    def load_data(self) -> Dataset:
        path = resolve_path(self.path)
        if not path.is_file():
            raise DataFileNotFound(f"data file not found: {path} (the model's csv.path)")
        header, rows = _read_rows(path)
        target_index, feature_indices = self._columns(header, path)
        names = [header[i] for i in feature_indices]
        X = np.empty((len(rows), len(feature_indices)), dtype=np.float64)
        y = []
        for row_number, (line, row) in enumerate(rows, start=1):
            where = f"row {row_number} (line {line}) of {path.name}"
            if len(row) != len(header):
                raise MalformedData(f"{where} has {len(row)} fields, the header has {len(header)}")
            label = row[target_index].strip()
            if not label:
                raise MalformedData(f"{where} has an empty target column {self.target!r}")
            y.append(label)
            for j, index in enumerate(feature_indices):
                X[row_number - 1, j] = _number(row[index], header[index], where)
        return make_dataset(X, np.asarray(y, dtype=object), names, source=str(path))

    def _columns(self, header: list[str], path: Path) -> tuple[int, list[int]]:
        columns = ", ".join(header)
        if self.target not in header:
            raise UnknownColumn(
                f"target column {self.target!r} is not in {path.name} (columns: {columns}); "
                "set training.csv.target"
            )
        wanted = list(self.features or [c for c in header if c != self.target])
        unknown = [c for c in wanted if c not in header]
        if unknown:
            raise UnknownColumn(
                f"feature column(s) {', '.join(map(repr, unknown))} not in {path.name} "
                f"(columns: {columns}); check training.csv.features"
            )
        if self.target in wanted:
            raise UnknownColumn(f"target column {self.target!r} is also listed as a feature")
        if not wanted:
            raise EmptyDataset(f"{path.name} has no feature columns besides {self.target!r}")
        return header.index(self.target), [header.index(c) for c in wanted]


def _read_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and non-blank rows with their file line numbers."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            lines = [(reader.line_num, row) for row in reader if any(f.strip() for f in row)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise MalformedData(f"{path.name} is not a readable UTF-8 CSV file: {exc}") from None
    if not lines:
        raise EmptyDataset(f"data file {path} is empty")
    header = [name.strip() for name in lines[0][1]]
    if not lines[1:]:
        raise EmptyDataset(f"data file {path} has a header but no data rows")
    return header, lines[1:]


def _number(text: str, column: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise NonNumericFeature(
            f"feature column {column!r} has a non-numeric value {text!r} in {where}"
        ) from None
    if not math.isfinite(value):
        raise NonNumericFeature(f"feature column {column!r} has {text!r} in {where}")
    return value

"""User-fixable training problems; each is a core TrainingError with one clear message."""

from __future__ import annotations

from core.errors import TrainingError


class DataFileNotFound(TrainingError):
    reason = "data_file_not_found"


class UnknownColumn(TrainingError):
    reason = "unknown_column"


class NonNumericFeature(TrainingError):
    reason = "non_numeric_feature"


class EmptyDataset(TrainingError):
    reason = "empty_dataset"


class NotEnoughData(TrainingError):
    """Too few rows or classes to make a stratified train/test split."""

    reason = "not_enough_data"


class InvalidEstimator(TrainingError):
    """The configured estimator is not allowed, cannot be imported or rejects its params."""

    reason = "invalid_estimator"


class MalformedData(TrainingError):
    """A row with the wrong number of fields, an empty label, or a file that is not CSV."""

    reason = "malformed_data"


class RegistrationRefused(TrainingError):
    """``python -m training register``: the file, its estimator or the evaluation set."""

    reason = "registration_refused"

"""Domain errors. Each carries the HTTP status it maps to; the gateway has one handler for all.

The CLI prints ``str(error)`` and exits non-zero, so a user's mistake never shows a traceback.
"""

from __future__ import annotations


class MLOpsError(Exception):
    status_code = 500
    reason = "internal_error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class ModelNotFound(MLOpsError):
    status_code = 404
    reason = "model_not_found"


class NoProductionModel(MLOpsError):
    status_code = 503
    reason = "no_production_model"


class IntegrityError(MLOpsError):
    """A version is unsigned, badly signed, or its bytes do not match its signed sha256."""

    status_code = 409
    reason = "integrity_check_failed"


class IncompatibleArtifact(MLOpsError):
    """An artifact was written by another scikit-learn version or in another format."""

    status_code = 409
    reason = "incompatible_artifact"


class SigningKeyMissing(MLOpsError):
    """Registering or signing a version where no private key is configured."""

    status_code = 500
    reason = "signing_key_missing"


class AliasConflict(MLOpsError):
    """E.g. a rollback with no previous production version."""

    status_code = 409
    reason = "alias_conflict"


class TrainingError(MLOpsError):
    """A user-fixable problem with training input: missing file, unknown column, empty data."""

    status_code = 422
    reason = "training_error"


class UnknownTrainer(TrainingError):
    reason = "unknown_trainer"

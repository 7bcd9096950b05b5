"""A model store on any folder, with this test session's signing keys (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

from core.settings import get_settings
from core.signing import SigningKeys
from core.store import LocalStorage, ModelStore


def store_at(root: Path, model: str = "iris", artifact_format: str | None = None) -> ModelStore:
    """The store a process configured like the tests (or with ``artifact_format``) opens."""
    settings = get_settings()
    fmt = artifact_format or str(settings.training.artifact_format)
    return ModelStore(LocalStorage(Path(root)), model, SigningKeys.from_settings(settings), fmt)

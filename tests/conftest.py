"""Shared fixtures: every test runs in the `testing` environment with its own artifacts folder."""

from __future__ import annotations

import pytest

from core.settings import reset_settings


@pytest.fixture(autouse=True)
def testing_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MLOPS_ENV", "testing")
    monkeypatch.setenv("MLOPS_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    reset_settings()
    yield
    reset_settings()

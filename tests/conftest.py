"""Shared fixtures: every test runs in the `testing` environment with its own artifacts folder,
and with a signing key pair made for this test session only (no key is ever committed)."""

from __future__ import annotations

import json

import pytest

from core.settings import reset_settings
from core.signing import SigningKeys


@pytest.fixture(scope="session", autouse=True)
def signing_keys():
    """Training signs with this session's private key, everything verifies with its public key;
    subprocesses get both through MLOPS_SIGNING__* (tests/factories.py signing_env)."""
    keys = SigningKeys.generate()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLOPS_SIGNING__PRIVATE_KEY", keys.private_text())
        patch.setenv("MLOPS_SIGNING__PUBLIC_KEYS", json.dumps([keys.public_text()]))
        reset_settings()  # settings cached while collecting (module imports) lack the keys
        yield keys
    reset_settings()


@pytest.fixture(autouse=True)
def testing_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MLOPS_ENV", "testing")
    monkeypatch.setenv("MLOPS_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    reset_settings()
    yield
    reset_settings()

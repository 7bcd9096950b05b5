"""Settings: environment overrides, per-environment defaults and validation errors that name
the key."""

from __future__ import annotations

import pytest

from core.settings import SettingsError, get_settings, reset_settings


def test_training_settings_env_override(monkeypatch):
    assert get_settings().training.test_size == 0.2
    monkeypatch.setenv("MLOPS_TRAINING__TEST_SIZE", "0.3")
    reset_settings()
    assert get_settings().training.test_size == 0.3
    assert get_settings().training.trainer == "iris"  # sibling keys survive the merge


def test_training_settings_override_reaches_the_trainer(monkeypatch):
    from training.trainers.iris import IrisTrainer

    monkeypatch.setenv("MLOPS_TRAINING__TEST_SIZE", "0.3")
    reset_settings()
    trainer = IrisTrainer.from_settings(get_settings())
    assert trainer.test_size == 0.3
    assert len(trainer.split(trainer.load_data()).y_test) == 45


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("TRAINING__TEST_SIZE", "1.5", "training.test_size"),
        ("TRAINING__METRIC", "auc", "training.metric"),
        ("TRAINING__ARTIFACT_FORMAT", "pickle", "training.artifact_format"),
    ],
)
def test_training_settings_validation_names_the_key(monkeypatch, key, value, named):
    monkeypatch.setenv(f"MLOPS_{key}", value)
    reset_settings()
    with pytest.raises(SettingsError, match=named):
        get_settings()


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("GATEWAY__HEADER_TIMEOUT_SECONDS", "0", "gateway.header_timeout_seconds"),
        ("GATEWAY__MAX_CONNECTIONS", "0", "gateway.max_connections"),
        ("GATEWAY__MAX_REQUESTS", "many", "gateway.max_requests"),
        ("GATEWAY__SSL_KEYFILE", "key.pem", "gateway.ssl_keyfile needs gateway.ssl_certfile"),
    ],
)
def test_gateway_settings_validation_names_the_key(monkeypatch, key, value, named):
    monkeypatch.setenv(f"MLOPS_{key}", value)
    reset_settings()
    with pytest.raises(SettingsError, match=named):
        get_settings()


def test_production_refuses_auth_disabled(monkeypatch):
    monkeypatch.setenv("MLOPS_AUTH__ENABLED", "false")
    reset_settings()
    assert get_settings().auth.enabled is False  # allowed outside production
    monkeypatch.setenv("MLOPS_ENV", "production")
    reset_settings()
    with pytest.raises(SettingsError, match=r"auth\.enabled = false is refused in production"):
        get_settings()


def test_production_hides_the_api_docs_unless_enabled(monkeypatch):
    assert get_settings().gateway.docs is True
    monkeypatch.setenv("MLOPS_ENV", "production")
    reset_settings()
    assert get_settings().gateway.docs is False
    monkeypatch.setenv("MLOPS_GATEWAY__DOCS", "true")
    reset_settings()
    assert get_settings().gateway.docs is True

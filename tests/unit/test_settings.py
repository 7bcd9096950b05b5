"""Training settings: environment overrides and validation errors that name the key."""

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

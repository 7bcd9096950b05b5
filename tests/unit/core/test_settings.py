"""Settings: environment overrides, per-environment defaults and validation errors that name
the key."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.settings import Settings, SettingsError, get_settings, reset_settings
from tests.factories import fresh_interpreter


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
    trainer = IrisTrainer.from_settings(get_settings().model())
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
        ("TRACING__SAMPLING_RATIO", "1.5", "tracing.sampling_ratio"),
        ("TRACING__ENDPOINT", "localhost:4318", "tracing.endpoint"),
        ("TRACING__EXPORT_TIMEOUT_SECONDS", "0", "tracing.export_timeout_seconds"),
        ("TRACING__HEADERS", "x", "(?i)tracing.headers: unknown setting"),
    ],
)
def test_gateway_and_tracing_settings_validation_names_the_key(monkeypatch, key, value, named):
    monkeypatch.setenv(f"MLOPS_{key}", value)
    reset_settings()
    with pytest.raises(SettingsError, match=named):
        get_settings()


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("MONITORING__MIN_ROWS", "2000", r"monitoring: .*min_rows \(2000\) must not exceed window"),
        ("MONITORING__KS_P_VALUE", "1", "monitoring.ks_p_value"),
        ("MONITORING__PROFILE_BINS", "1", "monitoring.profile_bins"),
        ("MODELS__IRIS__MONITORING", '@json {"window": 0}', "models.iris.monitoring.window"),
        ("MODELS__IRIS__MONITORING", '@json {"windows": 5}', "models.iris.monitoring.windows"),
    ],
)
def test_monitoring_settings_validation_names_the_key(monkeypatch, key, value, named):
    monkeypatch.setenv(f"MLOPS_{key}", value)
    reset_settings()
    with pytest.raises(SettingsError, match=named):
        get_settings()


def test_a_models_monitoring_table_overrides_key_by_key(monkeypatch):
    monkeypatch.setenv("MLOPS_MONITORING__WINDOW", "400")
    monkeypatch.setenv("MLOPS_MODELS__BIG__MONITORING", '@json {"retrain_on_drift": true}')
    reset_settings()
    settings = get_settings()
    big, iris = settings.model("big").monitoring, settings.model("iris").monitoring
    assert (big.retrain_on_drift, big.window) == (True, 400)
    assert (iris.retrain_on_drift, iris.window) == (False, 400)
    assert settings.monitoring_of("big") == big
    assert settings.monitoring_of("registered-only") == settings.monitoring


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


def test_settings_are_typed_and_frozen(monkeypatch):
    monkeypatch.setenv("MLOPS_API__MAX_WAIT_SECONDS", "12")
    reset_settings()
    settings = get_settings()
    assert isinstance(settings, Settings)
    assert settings.api.max_wait_seconds == 12 and settings.env == "testing"
    with pytest.raises(ValidationError):
        settings.api.max_wait_seconds = 1  # one object, read everywhere: never changed


def test_an_unknown_key_is_refused_naming_it(monkeypatch):
    monkeypatch.setenv("MLOPS_API_MAX_WAIT_SECONDS", "3")  # one underscore short of api.
    reset_settings()
    with pytest.raises(SettingsError, match=r"api_max_wait_seconds: unknown setting"):
        get_settings()


def test_every_bad_key_is_named_at_once_and_secrets_are_not_echoed(monkeypatch):
    monkeypatch.setenv("MLOPS_API__MAX_WAIT_SECONDS", "-1")
    monkeypatch.setenv("MLOPS_AUTH__API_KEYS", '@json {"s3cr3t-key": 5}')
    reset_settings()
    with pytest.raises(SettingsError) as refused:
        get_settings()
    message = str(refused.value)
    assert "api.max_wait_seconds: Input should be greater than 0 (got -1)" in message
    assert "auth.api_keys" in message
    assert "(got 5)" not in message  # a value under a key, password or token stays unshown


def test_an_unknown_environment_is_refused(monkeypatch):
    monkeypatch.setenv("MLOPS_ENV", "staging")
    reset_settings()
    with pytest.raises(SettingsError, match=r"env: Input should be .* \(got 'staging'\)"):
        get_settings()


def test_importing_worker_modules_builds_no_celery_app():
    """Only workers/celery.py (what `celery -A workers` loads) builds the app and swaps
    kombu's JSON decoder; any other module imports without side effects."""
    code = (
        "import sys, celery, kombu.serialization as s; "
        "import workers, workers.celery_app, workers.tasks, workers.retrain; "
        "decoder = s.registry._decoders['application/json'].__module__; "
        "sys.stdout.write(repr((celery._state.default_app, decoder)))"
    )
    out = fresh_interpreter(code)
    assert out == repr((None, "kombu.utils.json")), out

"""The one settings object: dynaconf over settings.toml, .secrets.toml and MLOPS_* variables.

``.dev-secrets.toml`` (git-ignored, written by `make run`) holds a development signing key
under ``[development]``, so it counts in the development environment only; it is read before
``.secrets.toml`` so that a key configured there (or in the environment) wins over it.

Nothing else in the code base reads the environment. Build it with :func:`get_settings`
(cached) and pass it down; tests call :func:`reset_settings` after changing the environment.
"""

from __future__ import annotations

import functools
from pathlib import Path

from dynaconf import Dynaconf, ValidationError, Validator

ROOT = Path(__file__).resolve().parent.parent
DEV_SECRETS = ROOT / ".dev-secrets.toml"

_SCHEDULE_PARTS = 5
_ENVIRONMENTS = ("default", "development", "testing", "production")


def _cron_ok(value: str) -> bool:
    return isinstance(value, str) and len(value.split()) == _SCHEDULE_PARTS


VALIDATORS = [
    Validator("redis_url", must_exist=True, is_type_of=str, len_min=1),
    Validator("artifacts_dir", must_exist=True, is_type_of=str, len_min=1),
    Validator("model_name", must_exist=True, is_type_of=str, len_min=1),
    Validator("logging.level", must_exist=True, is_type_of=str),
    Validator("logging.json", must_exist=True, is_type_of=bool),
    Validator("training.trainer", must_exist=True, is_type_of=str),
    Validator("training.test_size", must_exist=True, is_type_of=float, gt=0, lt=1),
    Validator("training.random_state", must_exist=True, is_type_of=int),
    Validator(
        "training.metric",
        must_exist=True,
        is_in=["accuracy", "f1_macro", "balanced_accuracy"],
    ),
    Validator("training.promotion_margin", must_exist=True, is_type_of=(int, float)),
    Validator("training.artifact_format", must_exist=True, is_in=["joblib", "skops"]),
    Validator("training.allow_sklearn_mismatch", must_exist=True, is_type_of=bool),
    Validator("training.lock_lease_seconds", must_exist=True, is_type_of=int, gt=0),
    Validator("training.estimator.class_path", must_exist=True, is_type_of=str),
    Validator("training.estimator.params", must_exist=True, is_type_of=dict),
    Validator("training.csv.path", must_exist=True, is_type_of=str),
    Validator("training.csv.target", must_exist=True, is_type_of=str),
    Validator("training.csv.features", must_exist=True, is_type_of=list),
    Validator("schedule.retrain_enabled", must_exist=True, is_type_of=bool),
    Validator(
        "schedule.retrain_cron",
        must_exist=True,
        condition=_cron_ok,
        messages={"condition": "{name} must be a 5-field cron expression, got {value!r}"},
    ),
    Validator("batching.max_batch_size", must_exist=True, is_type_of=int, gte=1),
    Validator("batching.max_wait_ms", must_exist=True, is_type_of=(int, float), gte=0),
    Validator("batching.backlog_wait_ms", must_exist=True, is_type_of=(int, float), gte=0),
    Validator("api.max_instances", must_exist=True, is_type_of=int, gte=1),
    Validator("api.max_body_bytes", must_exist=True, is_type_of=int, gte=1024),
    Validator("api.max_wait_seconds", must_exist=True, is_type_of=(int, float), gt=0),
    Validator("api.jobs_ttl_seconds", must_exist=True, is_type_of=int, gt=0),
    Validator("api.max_queue_depth", must_exist=True, is_type_of=int, gte=1),
    Validator("api.max_queue_bytes", must_exist=True, is_type_of=int, gte=1024),
    Validator("api.memory_backpressure", must_exist=True, is_type_of=(int, float), gt=0, lt=0.9),
    Validator("api.sync_grace_seconds", must_exist=True, is_type_of=(int, float), gte=0),
    Validator("api.redis_timeout_seconds", must_exist=True, is_type_of=(int, float), gt=0),
    Validator("api.retry_after_seconds", must_exist=True, is_type_of=int, gte=1),
    Validator("api.idempotency_window_seconds", must_exist=True, is_type_of=int, gt=0),
    Validator("api.idempotency_from_request_id", must_exist=True, is_type_of=bool),
    Validator("auth.enabled", must_exist=True, is_type_of=bool),
    Validator("auth.api_keys", must_exist=True, is_type_of=dict),
    Validator("worker.concurrency", must_exist=True, is_type_of=int, gte=1),
    Validator("worker.prefetch_multiplier", must_exist=True, is_type_of=int, gte=1),
    Validator("worker.predict_time_limit", must_exist=True, is_type_of=(int, float), gt=0),
    Validator("worker.retrain_time_limit", must_exist=True, is_type_of=(int, float), gt=0),
    Validator("worker.max_tasks_per_child", must_exist=True, is_type_of=int, gte=1),
    Validator("worker.max_retries_on_crash", must_exist=True, is_type_of=int, gte=0),
    Validator("worker.visibility_timeout", must_exist=True, is_type_of=int, gt=0),
    Validator("worker.heartbeat_seconds", must_exist=True, is_type_of=(int, float), gt=0),
    Validator("worker.model_poll_seconds", must_exist=True, is_type_of=(int, float), gt=0),
    Validator("worker.metrics_port", must_exist=True, is_type_of=int, gte=0),
    Validator("worker.metrics_address", must_exist=True, is_type_of=str, len_min=1),
    Validator("worker.metrics_dir", must_exist=True, is_type_of=str),
    Validator("flower.address", must_exist=True, is_type_of=str),
    Validator("flower.port", must_exist=True, is_type_of=int),
    Validator("flower.user", must_exist=True, is_type_of=str),
    Validator("flower.password", must_exist=True, is_type_of=str),
    Validator("gateway.host", must_exist=True, is_type_of=str),
    Validator("gateway.port", must_exist=True, is_type_of=int),
    Validator("signing.private_key", must_exist=True, is_type_of=str),
    Validator("signing.public_keys", must_exist=True, is_type_of=(list, str)),
    Validator("gateway.docs", must_exist=True, is_type_of=bool),
    Validator("gateway.keep_alive_seconds", must_exist=True, is_type_of=int, gte=1),
    Validator("gateway.header_timeout_seconds", must_exist=True, is_type_of=(int, float), gt=0),
    Validator("gateway.body_timeout_seconds", must_exist=True, is_type_of=(int, float), gt=0),
    Validator("gateway.max_connections", must_exist=True, is_type_of=int, gte=1),
    Validator("gateway.max_requests", must_exist=True, is_type_of=int, gte=1),
    Validator("gateway.metrics_token", must_exist=True, is_type_of=str),
    Validator("gateway.ssl_certfile", must_exist=True, is_type_of=str),
    Validator("gateway.ssl_keyfile", must_exist=True, is_type_of=str),
]


RESTORE_SWEEP_SECONDS = 1
"""How often each worker node looks for messages to redeliver (kombu's
``unacked_restore_interval``, workers/config.py)."""


def redelivery_bound(settings) -> float:
    """Seconds after a worker node dies by which its messages are back on their queue.

    Its messages were renewed at most ``heartbeat_seconds`` before it died (workers/recovery.py),
    are due ``visibility_timeout`` later, and the next sweep of any live node puts them back.
    """
    worker = settings.worker
    return worker.visibility_timeout + RESTORE_SWEEP_SECONDS + worker.heartbeat_seconds


def recovery_problems(settings) -> list[str]:
    """The ways these settings would let a job expire before its redelivery, or run twice."""
    worker, api = settings.worker, settings.api
    bound = redelivery_bound(settings)
    sum_bound = (
        f"{worker.visibility_timeout} + {RESTORE_SWEEP_SECONDS} + {worker.heartbeat_seconds}"
        f" = {bound:g}s"
    )
    problems = []
    if worker.visibility_timeout < 3 * worker.heartbeat_seconds:
        problems.append(
            f"worker.visibility_timeout ({worker.visibility_timeout}s) must be at least 3 x "
            f"worker.heartbeat_seconds ({worker.heartbeat_seconds}s): a live worker that misses "
            "a couple of renewals would have its running messages delivered twice"
        )
    if api.sync_grace_seconds < bound:
        problems.append(
            f"api.sync_grace_seconds ({api.sync_grace_seconds}s) must be at least the redelivery "
            "bound worker.visibility_timeout + restore sweep + worker.heartbeat_seconds "
            f"({sum_bound}): a sync job whose worker died would expire before its redelivery"
        )
    needed = api.max_wait_seconds + api.sync_grace_seconds + worker.predict_time_limit + bound
    if api.jobs_ttl_seconds <= needed:
        problems.append(
            f"api.jobs_ttl_seconds ({api.jobs_ttl_seconds}s) must exceed api.max_wait_seconds + "
            "api.sync_grace_seconds + worker.predict_time_limit + the redelivery bound "
            f"({api.max_wait_seconds} + {api.sync_grace_seconds} + {worker.predict_time_limit}"
            f" + {bound:g} = {needed:g}s): a job could expire before its redelivery"
        )
    return problems


class SettingsError(SystemExit):
    """Raised at start-up when a setting is missing or has the wrong type."""


def load_settings() -> Dynaconf:
    """Build and validate a fresh settings object; exit with a message naming a bad key."""
    settings = Dynaconf(
        envvar_prefix="MLOPS",
        env_switcher="MLOPS_ENV",
        environments=True,
        default_env="default",
        env="development",
        merge_enabled=True,
        load_dotenv=False,
        root_path=str(ROOT),
        settings_files=[
            str(ROOT / "settings.toml"),
            str(DEV_SECRETS),
            str(ROOT / ".secrets.toml"),
        ],
    )
    settings.validators.register(*VALIDATORS)
    try:
        settings.validators.validate_all()
    except ValidationError as exc:
        raise SettingsError(f"invalid settings: {exc}") from None
    problems = recovery_problems(settings)
    if problems:
        raise SettingsError("invalid settings: " + "; ".join(problems))
    if settings.api.idempotency_window_seconds > settings.api.jobs_ttl_seconds:
        raise SettingsError(
            "invalid settings: api.idempotency_window_seconds "
            f"({settings.api.idempotency_window_seconds}) must not exceed api.jobs_ttl_seconds "
            f"({settings.api.jobs_ttl_seconds}): a replay must find the job its key names"
        )
    if settings.current_env.lower() not in _ENVIRONMENTS:
        raise SettingsError(
            f"invalid settings: MLOPS_ENV={settings.current_env!r}, expected one of {_ENVIRONMENTS}"
        )
    _check_signing_keys(settings)
    if environment(settings) == "production" and not settings.auth.enabled:
        raise SettingsError(
            "invalid settings: auth.enabled = false is refused in production (MLOPS_ENV="
            "production): every endpoint would be open; configure auth.api_keys instead"
        )
    if settings.gateway.ssl_keyfile and not settings.gateway.ssl_certfile:
        raise SettingsError("invalid settings: gateway.ssl_keyfile needs gateway.ssl_certfile")
    return settings


def _check_signing_keys(settings: Dynaconf) -> None:
    """Keys that do not parse stop every process; so does production with no key to verify."""
    from core.signing import InvalidKey, SigningKeys

    try:
        keys = SigningKeys.from_settings(settings)
    except InvalidKey as exc:
        raise SettingsError(f"invalid settings: {exc}") from None
    if environment(settings) == "production" and not keys.can_verify:
        raise SettingsError(
            "invalid settings: signing.public_keys is empty and signing.private_key is not set: "
            "production refuses to run without a key to verify model versions with; set "
            "MLOPS_SIGNING__PUBLIC_KEYS (and MLOPS_SIGNING__PRIVATE_KEY where training runs)"
        )


@functools.cache
def get_settings() -> Dynaconf:
    """The process-wide settings object, built on first use."""
    return load_settings()


def reset_settings() -> None:
    """Forget the cached settings so the next :func:`get_settings` reads them again."""
    get_settings.cache_clear()


def resolve_path(value: str | Path) -> Path:
    """A path from settings: absolute as given, relative ones against the project folder."""
    path = Path(value)
    return path if path.is_absolute() else ROOT / path


def environment(settings: Dynaconf) -> str:
    return str(settings.current_env).lower()

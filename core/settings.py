"""The one settings object: dynaconf reads, pydantic validates, everything else reads a
typed, frozen :class:`Settings`.

dynaconf layers ``settings.toml``, ``.secrets.toml`` and ``MLOPS_*`` variables per environment;
its result is validated once into :class:`Settings` (defaults and constraints in one place; an
error names the key, e.g. ``api.max_wait_seconds``), which is what every part receives.

``.dev-secrets.toml`` (git-ignored, written by `make run`) holds a development signing key
under ``[development]``, so it counts in the development environment only; it is read before
``.secrets.toml`` so that a key configured there (or in the environment) wins over it.

Nothing else in the code base reads the environment. Build it with :func:`get_settings`
(cached) and pass it down; tests call :func:`reset_settings` after changing the environment.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, Literal

from dynaconf import Dynaconf
from dynaconf.utils.parse_conf import DynaconfParseError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from core.redis import mask, parse_sentinel_url

ROOT = Path(__file__).resolve().parent.parent
DEV_SECRETS = ROOT / ".dev-secrets.toml"

Number = int | float  # kept as written: "30" stays 30, "1.0" stays 1.0 (messages quote them)
Environment = Literal["default", "development", "testing", "production"]
_SECRET_WORDS = ("key", "password", "token")  # never echo these settings' values in errors


class Section(BaseModel):
    """A table of settings.toml: every key required (settings.toml holds the defaults, with
    their comments), unknown keys refused (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class LoggingSettings(Section):
    level: str
    as_json: bool = Field(alias="json")  # JSON lines (production) or readable text


class EstimatorSettings(Section):
    class_path: str
    params: dict[str, Any]


class CsvSettings(Section):
    path: str
    target: str
    features: list[str]


class TrainingSettings(Section):
    trainer: str
    test_size: Number = Field(gt=0, lt=1)
    random_state: int
    metric: Literal["accuracy", "f1_macro", "balanced_accuracy"]
    promotion_margin: Number
    artifact_format: Literal["joblib", "skops"]
    allow_sklearn_mismatch: bool
    lock_lease_seconds: int = Field(gt=0)
    estimator: EstimatorSettings
    csv: CsvSettings


MODEL_NAME = r"^[a-z][a-z0-9_-]{0,63}$"  # no path characters, never all digits (a version)
MODEL_NAME_RULE = (
    "a model name is lower-case letters, digits, '-' and '_', starting with a letter, "
    "at most 64 characters"
)
# What each model may set for itself; the rest of [training] is one for the deployment.
MODEL_KEYS = (
    "trainer", "test_size", "random_state", "metric", "promotion_margin", "estimator", "csv"
)  # fmt: skip


class PredictionLogSettings(Section):
    """The prediction log (core/prediction_log.py): what workers keep of each predict job."""

    enabled: bool
    sample_ratio: Number = Field(ge=0, le=1)  # share of predict jobs logged
    max_entries: int = Field(ge=100)  # per model stream; feedback is taken for these only
    flush_seconds: Number = Field(gt=0)  # how often workers write logs to the store
    flush_batch: int = Field(ge=1)  # entries read from Redis (and written) per file at most


class FeedbackSettings(Section):
    """Feedback labels (core/feedback.py): their log, live quality, the labels trigger, the gate."""

    max_labels: int = Field(ge=1)  # labels in one feedback request (one per row of a job)
    max_pending: int = Field(ge=1)  # labels not yet flushed to the store before 429
    quality_window: int = Field(ge=1)  # labelled predictions per version in live quality
    retrain_after_labels: int = Field(ge=0)  # new labels that queue a retrain (0: off)
    gate_rows: int = Field(ge=0)  # most recent labelled rows the gate compares on (0: off)
    gate_min_rows: int = Field(ge=1)  # fewer: the held-out split decides alone


class ModelSettings(Section):
    """One served model: ``[training]``'s values, overridden by its ``[models.<name>]`` table."""

    name: str = Field(pattern=MODEL_NAME)
    trainer: str
    test_size: Number = Field(gt=0, lt=1)
    random_state: int
    metric: Literal["accuracy", "f1_macro", "balanced_accuracy"]
    promotion_margin: Number
    estimator: EstimatorSettings
    csv: CsvSettings
    schedule: ScheduleSettings
    monitoring: MonitoringSettings
    queue: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")  # its predict jobs' Celery queue
    max_batch_size: int = Field(ge=1)  # predict jobs grouped into one message
    prediction_log: PredictionLogSettings
    feedback: FeedbackSettings


class SigningSettings(Section):
    private_key: str
    public_keys: list[str] | str


class ScheduleSettings(Section):
    retrain_enabled: bool
    retrain_cron: str

    @field_validator("retrain_cron")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError(f"must be a 5-field cron expression, got {value!r}")
        return value


class MonitoringSettings(Section):
    """Drift of a model's recent inputs from its training data (workers/monitoring.py)."""

    enabled: bool
    interval_seconds: Number = Field(gt=0)
    window: int = Field(ge=1)  # the most recent logged rows of the production version compared
    min_rows: int = Field(ge=1)
    psi_threshold: Number = Field(gt=0)
    ks_p_value: Number = Field(gt=0, lt=1)
    retrain_on_drift: bool
    retrain_psi_threshold: Number = Field(gt=0)
    retrain_cooldown_seconds: int = Field(ge=0)
    profile_bins: int = Field(ge=2, le=100)
    profile_sample: int = Field(ge=10, le=10000)

    @model_validator(mode="after")
    def _min_rows_within_window(self) -> MonitoringSettings:
        if self.min_rows > self.window:
            raise ValueError(
                f"min_rows ({self.min_rows}) must not exceed window ({self.window}): "
                "no run would ever have enough rows"
            )
        return self


class BatchingSettings(Section):
    max_batch_size: int = Field(ge=1)
    max_wait_ms: Number = Field(ge=0)
    backlog_wait_ms: Number = Field(ge=0)


class ApiSettings(Section):
    max_instances: int = Field(ge=1)
    max_body_bytes: int = Field(ge=1024)
    max_wait_seconds: Number = Field(gt=0)
    jobs_ttl_seconds: int = Field(gt=0)
    max_queue_depth: int = Field(ge=1)
    max_queue_bytes: int = Field(ge=1024)
    memory_backpressure: Number = Field(gt=0, lt=0.9)
    sync_grace_seconds: Number = Field(ge=0)
    retry_after_seconds: int = Field(ge=1)
    redis_timeout_seconds: Number = Field(gt=0)
    idempotency_window_seconds: int = Field(gt=0)
    idempotency_from_request_id: bool
    replica_ack_ms: int = Field(ge=0)  # 0: off; else WAIT 1 <ms> after each enqueue

    @model_validator(mode="after")
    def _ack_within_timeout(self) -> ApiSettings:
        if self.replica_ack_ms >= self.redis_timeout_seconds * 1000:
            raise ValueError(
                f"replica_ack_ms ({self.replica_ack_ms}) must be below redis_timeout_seconds "
                f"({self.redis_timeout_seconds:g} s): the WAIT would time out the connection"
            )
        return self


class AuthSettings(Section):
    enabled: bool
    api_keys: dict[str, list[str] | str]


class WorkerSettings(Section):
    concurrency: int = Field(ge=1)
    prefetch_multiplier: int = Field(ge=1)
    predict_time_limit: Number = Field(gt=0)
    retrain_time_limit: Number = Field(gt=0)
    max_tasks_per_child: int = Field(ge=1)
    inline_when_alone: bool
    max_retries_on_crash: int = Field(ge=0)
    visibility_timeout: int = Field(gt=0)
    heartbeat_seconds: Number = Field(gt=0)
    model_poll_seconds: Number = Field(gt=0)
    model_cache_bytes: int = Field(ge=1)
    metrics_port: int = Field(ge=0)
    metrics_address: str = Field(min_length=1)
    metrics_dir: str


class FlowerSettings(Section):
    address: str
    port: int
    user: str
    password: str


class GatewaySettings(Section):
    host: str
    port: int
    docs: bool
    keep_alive_seconds: int = Field(ge=1)
    header_timeout_seconds: Number = Field(gt=0)
    body_timeout_seconds: Number = Field(gt=0)
    max_connections: int = Field(ge=1)
    max_requests: int = Field(ge=1)
    metrics_token: str
    ssl_certfile: str
    ssl_keyfile: str


class TracingSettings(Section):
    enabled: bool
    endpoint: str = Field(pattern=r"^https?://")  # OTLP/HTTP traces URL (…/v1/traces)
    sampling_ratio: Number = Field(ge=0, le=1)
    gateway_service: str = Field(min_length=1)
    worker_service: str = Field(min_length=1)
    export_every_seconds: Number = Field(gt=0)
    export_timeout_seconds: Number = Field(gt=0)


STORE_SCHEMES = ("s3",)  # what artifacts_url may name besides a local path


class ObjectStoreSettings(Section):
    """How to reach the object store of an ``s3://`` artifacts_url (AWS S3, MinIO, GCS)."""

    endpoint_url: str  # empty: AWS; MinIO "http://minio:9000"; GCS "https://storage.googleapis.com"
    region: str
    access_key_id: str  # empty (both): boto's chain (AWS_* variables, instance role)
    secret_access_key: str
    cache_dir: str  # downloaded artifacts, by sha256, on local disk

    @field_validator("endpoint_url")
    @classmethod
    def _http(cls, value: str) -> str:
        if value and not re.match(r"^https?://[^/@]+(/|$)", value):
            raise ValueError(
                "must be an http:// or https:// URL without credentials (they go in "
                "access_key_id and secret_access_key), or empty for AWS"
            )
        return value


class Settings(Section):
    """Everything configurable, validated. Built once per process by :func:`get_settings`."""

    env: Environment
    redis_url: str = Field(min_length=1)  # redis[s]:// or sentinel[s]:// (core/redis.py)
    artifacts_dir: str = Field(min_length=1)
    artifacts_url: str  # empty: artifacts_dir; "s3://bucket/prefix": object storage
    object_store: ObjectStoreSettings
    default_model: str = Field(pattern=MODEL_NAME)
    models: dict[str, ModelSettings]
    logging: LoggingSettings
    training: TrainingSettings
    signing: SigningSettings
    schedule: ScheduleSettings
    monitoring: MonitoringSettings
    batching: BatchingSettings
    api: ApiSettings
    auth: AuthSettings
    worker: WorkerSettings
    flower: FlowerSettings
    gateway: GatewaySettings
    tracing: TracingSettings
    prediction_log: PredictionLogSettings
    feedback: FeedbackSettings

    @field_validator("redis_url")
    @classmethod
    def _sentinel_url_parses(cls, value: str) -> str:
        parse_sentinel_url(value)  # ValueError for a malformed sentinel:// URL
        return value

    @field_validator("artifacts_url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        scheme, sep, rest = value.partition("://")
        if not sep:
            return value  # a local path
        if scheme.lower() not in STORE_SCHEMES:
            raise ValueError(
                f"unknown scheme {scheme!r}: a local path or s3://bucket/prefix "
                "(S3, MinIO, GCS in S3 mode)"
            )
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^/].*)?/?", rest):
            raise ValueError("must be s3://bucket or s3://bucket/prefix")
        return value

    @model_validator(mode="before")
    @classmethod
    def _each_model_inherits(cls, data: Any) -> Any:
        """Every model gets [training]'s, [schedule]'s, [monitoring]'s, [batching]'s,
        [prediction_log]'s and [feedback]'s values for the keys its own table leaves out; the
        default model exists even without a table."""
        if not isinstance(data, dict):
            return data
        training = data.get("training") or {}
        tables = dict(data.get("models") or {})
        tables.setdefault(data.get("default_model"), {})
        models = {}
        for name, table in tables.items():
            if not isinstance(table, dict):
                models[name] = table  # refused by validation, naming the model
                continue
            inherited = {key: training[key] for key in MODEL_KEYS if key in training}
            for table_name in PER_MODEL_TABLES:
                inherited[table_name] = data.get(table_name)
            inherited["queue"] = PREDICT_QUEUE_NAME
            inherited["max_batch_size"] = (data.get("batching") or {}).get("max_batch_size")
            merged = {**inherited, **table, "name": name}
            for key in ("estimator", "csv", *PER_MODEL_TABLES):  # overridden key by key
                if isinstance(inherited.get(key), dict) and isinstance(table.get(key), dict):
                    merged[key] = {**inherited[key], **table[key]}
            models[name] = merged
        return {**data, "models": models}

    def model(self, name: str | None = None) -> ModelSettings:
        """A served model's settings (None: the default model's); KeyError if unknown."""
        return self.models[name or self.default_model]

    def monitoring_of(self, name: str) -> MonitoringSettings:
        """A model's drift monitoring settings: its table's, else [monitoring]'s (a model
        registered without a table is not monitored on a schedule, but its thresholds show)."""
        model = self.models.get(name)
        return model.monitoring if model is not None else self.monitoring

    def prediction_log_of(self, model: str) -> PredictionLogSettings:
        """``model``'s prediction log settings; [prediction_log]'s for a model found in the
        store without a settings table."""
        configured = self.models.get(model)
        return configured.prediction_log if configured is not None else self.prediction_log

    def feedback_of(self, model: str) -> FeedbackSettings:
        """``model``'s feedback settings, likewise."""
        configured = self.models.get(model)
        return configured.feedback if configured is not None else self.feedback


PREDICT_QUEUE_NAME = "predict"  # core/messages.py's PREDICT_QUEUE: a model's default queue
# Tables a model's own table overrides key by key.
PER_MODEL_TABLES = ("schedule", "monitoring", "prediction_log", "feedback")

RESTORE_SWEEP_SECONDS = 1
"""How often each worker node looks for messages to redeliver (kombu's
``unacked_restore_interval``, workers/config.py)."""


def redelivery_bound(settings: Settings) -> float:
    """Seconds after a worker node dies by which its messages are back on their queue.

    Its messages were renewed at most ``heartbeat_seconds`` before it died (workers/recovery.py),
    are due ``visibility_timeout`` later, and the next sweep of any live node puts them back.
    """
    worker = settings.worker
    return worker.visibility_timeout + RESTORE_SWEEP_SECONDS + worker.heartbeat_seconds


def recovery_problems(settings: Settings) -> list[str]:
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


def _problems(settings: Settings) -> list[str]:
    """Rules that span several keys."""
    problems = recovery_problems(settings)
    api = settings.api
    if api.idempotency_window_seconds > api.jobs_ttl_seconds:
        problems.append(
            f"api.idempotency_window_seconds ({api.idempotency_window_seconds}) must not exceed "
            f"api.jobs_ttl_seconds ({api.jobs_ttl_seconds}): a replay must find the job its key "
            "names"
        )
    if settings.env == "production" and not settings.auth.enabled:
        problems.append(
            "auth.enabled = false is refused in production (MLOPS_ENV=production): every "
            "endpoint would be open; configure auth.api_keys instead"
        )
    if settings.gateway.ssl_keyfile and not settings.gateway.ssl_certfile:
        problems.append("gateway.ssl_keyfile needs gateway.ssl_certfile")
    return problems


class SettingsError(SystemExit):
    """Raised at start-up when a setting is missing, has the wrong type or breaks a rule."""


def _describe(error: dict) -> str:
    """One pydantic error as ``key: what is wrong (got value)``; secrets' values are hidden."""
    key = ".".join(str(part) for part in error["loc"]) or "settings"
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown setting (a typo? see settings.toml)"
    value = error.get("input")
    if isinstance(value, str):  # a URL's password: scheme://user:***@host
        value = (
            mask(value) if key == "redis_url" else re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", value)
        )
    shown = "" if any(w in key for w in _SECRET_WORDS) else f" (got {value!r})"
    return f"{key}: {error['msg']}{shown}"


def _read() -> dict:
    """What dynaconf makes of the files and MLOPS_* variables, as plain data."""
    loaded = Dynaconf(
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
    try:
        raw = loaded.as_dict()
    except DynaconfParseError as exc:  # e.g. "@json" with invalid JSON; its text shows the value
        what = str(exc).split(":", 1)[0]
        raise SettingsError(
            f"invalid settings: {what}; check the MLOPS_* variables and the settings files"
        ) from None
    data = {key.lower(): value for key, value in raw.items()}
    if isinstance(data.get("models"), dict):
        data["models"] = {
            str(name).lower(): _lower_keys(table) for name, table in data["models"].items()
        }
    data.pop("load_dotenv", None)  # dynaconf's own switches, not ours
    data["env"] = str(loaded.current_env).lower()
    return data


def _lower_keys(table: Any) -> Any:
    """A model table's keys as settings.toml spells them: dynaconf keeps a key that only an
    MLOPS_MODELS__<NAME>__<KEY> variable names in upper case. Estimator parameters (and the
    values) are left as written."""
    if not isinstance(table, dict):
        return table
    lowered = {}
    for key, value in table.items():
        key = str(key).lower()
        if isinstance(value, dict) and key != "params":
            value = _lower_keys(value)
        lowered[key] = value
    return lowered


def load_settings() -> Settings:
    """Read and validate the settings; exit with a message naming every bad key."""
    data = _read()
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(error) for error in exc.errors()]
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None
    problems = _problems(settings)
    if problems:
        raise SettingsError("invalid settings: " + "; ".join(problems))
    _check_signing_keys(settings)
    return settings


def _check_signing_keys(settings: Settings) -> None:
    """Keys that do not parse stop every process; so does production with no key to verify."""
    from core.signing import InvalidKey, SigningKeys

    try:
        keys = SigningKeys.from_settings(settings)
    except InvalidKey as exc:
        raise SettingsError(f"invalid settings: {exc}") from None
    if settings.env == "production" and not keys.can_verify:
        raise SettingsError(
            "invalid settings: signing.public_keys is empty and signing.private_key is not set: "
            "production refuses to run without a key to verify model versions with; set "
            "MLOPS_SIGNING__PUBLIC_KEYS (and MLOPS_SIGNING__PRIVATE_KEY where training runs)"
        )


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, built on first use (entry points only: pass it down)."""
    return load_settings()


def reset_settings() -> None:
    """Forget the cached settings so the next :func:`get_settings` reads them again."""
    get_settings.cache_clear()


def resolve_path(value: str | Path) -> Path:
    """A path from settings: absolute as given, relative ones against the project folder."""
    path = Path(value)
    return path if path.is_absolute() else ROOT / path

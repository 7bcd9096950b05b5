"""One training run: data -> train -> evaluate -> save -> gate -> record -> promote -> card.

The data is the trainer's base data plus the labelled feedback collected so far
(training/feedback.py), recorded by fingerprint in the new version. A run whose data and
recipe (trainer, parameters) are those of the production version or of the newest one is
skipped, "nothing new to learn", unless forced: it would only make the same model again.

Plain functions, so the Celery retrain task is a thin wrapper and tests need no Celery. A run
that fails, is skipped or is rejected never touches the production alias.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import joblib
import numpy as np
import orjson
import sklearn
from loguru import logger

from core.errors import AliasConflict, MLOpsError, TrainingError
from core.settings import ModelSettings, Settings
from core.single_flight import RunLease
from core.store import (
    DataVersion,
    FeatureSpec,
    GateDecision,
    ModelMetadata,
    ModelStore,
    open_store,
)
from training.base import Trainer
from training.cards import write_card
from training.data import Dataset, Split
from training.estimators import plain
from training.feedback import combine, load_feedback, snapshot
from training.gate import FeedbackScores, decide
from training.profile import build_profile
from training.registry import get_trainer
from training.scoring import METRICS
from training.serialization import ARTIFACT_FILES, dump_model, load_model, loads_model

Progress = Callable[[str, int, str], None]
"""``progress(step, percent, detail)`` as each step starts: ``step`` is a key of
:data:`STEPS`, ``detail`` says what it works on (e.g. ``"LogisticRegression on 120 rows"``)."""

STEPS = {
    "loading data": 5,
    "splitting": 15,
    "fitting": 25,
    "evaluating": 60,
    "saving": 70,
    "gating": 85,
    "done": 100,
}


NOTHING_NEW = "nothing new to learn"


@dataclass
class TrainingOutcome:
    model_name: str
    version: int | None  # None: skipped, nothing was trained
    decision: str  # "promoted" | "rejected" | "skipped"
    promoted: bool
    metric: str
    candidate: float | None
    production: float | None
    production_version: int | None
    margin: float
    reason: str
    metrics: dict[str, float] = field(default_factory=dict)
    trigger: str = "manual"
    data: dict[str, Any] | None = None  # the data version (core/store.py DataVersion)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (plain str, int, float, None), e.g. for a Celery result."""
        return asdict(self)


def _report(progress: Progress | None, step: str, detail: str = "") -> None:
    """Progress is best effort: a failing reporter must not fail (or half-finish) a run."""
    logger.debug("training step: {} {}", step, detail)
    if progress is None:
        return
    try:
        progress(step, STEPS[step], detail)
    except Exception as exc:
        logger.warning("progress callback failed at {!r}: {}", step, exc)


def _shape(data: Dataset) -> str:
    classes = len(set(data.y.tolist()))
    where = f" from {data.source}" if data.source else ""
    return f"{data.n_rows} rows, {len(data.feature_names)} features, {classes} classes{where}"


def fit_trainer(trainer: Trainer, data: Dataset, split: Split) -> Trainer:
    """Fit, turning scikit-learn's complaints about data or parameters into a TrainingError."""
    try:
        return trainer.fit(split.X_train, split.y_train, feature_names=data.feature_names)
    except ValueError as exc:  # includes scikit-learn's InvalidParameterError
        raise TrainingError(f"fitting {trainer.estimator} failed: {exc}") from None


def save_artifact(estimator, fmt: str, X_check: np.ndarray, what: str) -> bytes:
    """Serialize and immediately load back, so no version is registered that cannot load."""
    artifact = dump_model(estimator, fmt)
    try:
        restored = loads_model(artifact, fmt)
    except Exception as exc:
        raise TrainingError(f"{what} cannot be saved as {fmt}: {exc}") from None
    if not np.array_equal(restored.predict(X_check), estimator.predict(X_check)):
        raise TrainingError(f"{what} does not round-trip through {fmt}")
    return artifact


def build_metadata(
    model_name: str,
    trainer: Trainer,
    data: Dataset,
    split: Split,
    fmt: str,
    cfg: ModelSettings,
    data_version: DataVersion | None = None,
    trigger: str = "manual",
    trigger_detail: dict[str, Any] | None = None,
) -> ModelMetadata:
    """The new version's metadata, with the reference profile of its training rows."""
    description = trainer.describe()
    profile = build_profile(
        split.X_train,
        data.feature_names,
        trainer.predict(split.X_train),
        description["classes"],
        bins=int(cfg.monitoring.profile_bins),
        sample_size=int(cfg.monitoring.profile_sample),
        source="training split",
    )
    return ModelMetadata(
        name=model_name,
        trainer=trainer.name,
        params=plain(trainer.get_params()),
        metrics=description["metrics"],
        features=[FeatureSpec(**f) for f in description["features"]],
        classes=description["classes"],
        data_fingerprint=data.fingerprint,
        n_train=len(split.y_train),
        n_test=len(split.y_test),
        trained_at=datetime.now(UTC).isoformat(),
        python_version=platform.python_version(),
        sklearn_version=sklearn.__version__,
        joblib_version=joblib.__version__,
        numpy_version=np.__version__,
        artifact_file=ARTIFACT_FILES[fmt],
        artifact_format=fmt,
        confusion_matrix=description["confusion_matrix"],
        reference_profile=profile,
        data=data_version,
        trigger=trigger,
        trigger_detail=trigger_detail,
    )


def _json(value: Any) -> Any:
    return orjson.loads(orjson.dumps(value))


def nothing_new(
    store: ModelStore, trainer: str, params: dict, fingerprint: str, production: int | None
) -> str | None:
    """Why a run would make a model already made (the production version's, or the newest
    version's, with the same trainer, parameters and data), or None."""
    versions = store.versions()
    for version in sorted({v for v in (production, max(versions, default=None)) if v}):
        meta = store.metadata(version)
        if (
            meta.source is not None
            or meta.trainer != trainer
            or meta.data_fingerprint != fingerprint
        ):
            continue
        if _json(meta.params) != _json(params):
            continue
        status = (
            "production"
            if version == production
            else (meta.gate.decision if meta.gate else "not gated")
        )
        return (
            f"{NOTHING_NEW}: v{version} ({status}) was trained by {trainer} with the same "
            f"parameters on the same data (fingerprint {fingerprint[:12]}); send new labels, "
            "change the settings, or force it"
        )
    return None


def feedback_scores(
    settings: Settings,
    store: ModelStore,
    model: Trainer,
    split: Split,
    base_rows: int,
    production: ModelMetadata | None,
    metric: str,
    limit: int,
) -> FeedbackScores | None:
    """Candidate and production on the most recent ``limit`` labelled feedback rows of the
    candidate's held-out split (rows from ``base_rows`` on are feedback, oldest first)."""
    if not limit or split.test_index is None:
        return None
    held_out = np.flatnonzero(split.test_index >= base_rows)
    if not len(held_out):
        return None
    recent = held_out[np.argsort(split.test_index[held_out])][-limit:]
    X, y = split.X_test[recent], split.y_test[recent]
    score = METRICS[metric]
    candidate = float(score(y, model.predict(X)))
    current = None
    if production is not None and production.feature_names == model.feature_names_:
        try:
            _, estimator = load_model(store, production.version, settings)
            predicted = np.asarray([str(p) for p in estimator.predict(X)], dtype=object)
            current = float(score(y, predicted))
        except (MLOpsError, OSError, ValueError) as exc:
            logger.warning(
                "production v{} could not score recent feedback: {}", production.version, exc
            )
    return FeedbackScores(len(recent), candidate, current)


def model_settings(settings: Settings, name: str) -> ModelSettings:
    """A model's training settings, or a TrainingError naming what to add."""
    try:
        return settings.model(name)
    except KeyError:
        raise TrainingError(
            f"model {name!r} has no [models.{name}] table in the settings: no trainer to "
            "retrain it with (register versions with `python -m training register`)"
        ) from None


def run_training(
    settings: Settings,
    store: ModelStore | None = None,
    progress: Progress | None = None,
    *,
    trainer: str | None = None,
    lease: RunLease | None = None,
    actor: str = "unknown",
    trigger: str = "manual",
    trigger_detail: dict[str, Any] | None = None,
    force: bool = False,
) -> TrainingOutcome:
    """Train the configured (or named) trainer on its data and the feedback so far, register
    it, gate it, maybe promote it; skip it when there is nothing new to learn (unless
    ``force``).

    ``lease``: the run's single-flight lease; a run that lost it registers its version but
    does not promote it. Its Redis client flushes the waiting labels first. Promotion is a
    compare-and-set on the production version this run started from, so a manual promote or
    rollback made meanwhile is never overwritten. ``trigger``: why it runs (core/single_flight.py
    TRIGGERS; for ``drift``, ``trigger_detail`` names the drifted features): kept in the new
    version's metadata.
    """
    store = store or open_store(settings)
    store.keys.require_signer()  # before the work, not after: a version must be signed
    cfg = model_settings(settings, store.model_name)
    fmt = str(settings.training.artifact_format)
    metric = str(cfg.metric)
    trainer_name = trainer or str(cfg.trainer)
    model = get_trainer(trainer_name).from_settings(cfg)
    started_from = store.production_version()
    logger.debug("training {} with trainer {!r} ({})", store.model_name, trainer_name, trigger)

    _report(progress, "loading data", f"trainer {trainer_name}")
    base = model.load_data()
    snapshot(lease.client if lease is not None else None, store)
    data, data_version = combine(base, load_feedback(store, base.feature_names))
    params = plain(model.get_params())
    skip = nothing_new(store, trainer_name, params, data.fingerprint, started_from)
    if skip is not None and force:
        logger.info("{}; forced: training anyway", skip)
        skip = None
    if skip is not None:
        logger.info("retrain of {} skipped: {}", store.model_name, skip)
        _report(progress, "done", NOTHING_NEW)
        return TrainingOutcome(
            model_name=store.model_name,
            version=None,
            decision="skipped",
            promoted=False,
            metric=metric,
            candidate=None,
            production=None,
            production_version=started_from,
            margin=float(cfg.promotion_margin),
            reason=skip,
            trigger=trigger,
            data=data_version.model_dump(),
        )
    _report(progress, "splitting", _shape(data))
    split = model.split(data)
    estimator = str(model.estimator).rsplit(".", 1)[-1]
    _report(progress, "fitting", f"{estimator} on {len(split.y_train)} rows")
    fit_trainer(model, data, split)
    _report(progress, "evaluating", f"{metric} on {len(split.y_test)} held-out rows")
    model.evaluate(split.X_test, split.y_test)

    _report(progress, "saving", f"as {fmt}, signed")
    artifact = save_artifact(model.pipeline_, fmt, split.X_test, model.estimator)
    described = build_metadata(
        store.model_name, model, data, split, fmt, cfg, data_version, trigger, trigger_detail
    )
    meta = store.register(artifact, described)
    store.audit(meta.version, "registered", actor, f"trainer {trainer_name}, trigger {trigger}")
    logger.info(
        "registered {} v{} ({} {:.4f})", meta.name, meta.version, metric, meta.metrics[metric]
    )

    current = store.production_version()
    against = "no production version" if current is None else f"production v{current}"
    _report(
        progress,
        "gating",
        f"v{meta.version} ({metric} {meta.metrics[metric]:.4f}) against {against}",
    )
    production = store.metadata(current) if current is not None else None
    recent = feedback_scores(
        settings, store, model, split, base.n_rows, production, metric, cfg.feedback.gate_rows
    )
    decision = gate_and_promote(
        store,
        meta,
        production,
        started_from,
        metric,
        float(cfg.promotion_margin),
        actor,
        lease,
        feedback=recent,
        min_rows=cfg.feedback.gate_min_rows,
    )
    record_decision(store, meta.version, decision)
    _report(progress, "done", f"v{meta.version} {decision.decision}")

    return TrainingOutcome(
        model_name=meta.name,
        version=meta.version,
        decision=decision.decision,
        promoted=decision.decision == "promoted",
        metric=metric,
        candidate=decision.candidate,
        production=decision.production,
        production_version=decision.production_version,
        margin=decision.margin,
        reason=decision.reason,
        metrics=dict(meta.metrics),
        trigger=trigger,
        data=data_version.model_dump(),
    )


def gate_and_promote(
    store: ModelStore,
    meta: ModelMetadata,
    production: ModelMetadata | None,
    started_from: int | None,
    metric: str,
    margin: float,
    actor: str,
    lease: RunLease | None = None,
    feedback: FeedbackScores | None = None,
    min_rows: int = 1,
) -> GateDecision:
    """The gate's decision on ``meta`` against ``production`` (None: there is none), on recent
    ``feedback`` too (training/gate.py); promote ``meta`` when it passes and production is
    still ``started_from`` (compare-and-set)."""
    decision = decide(meta, production, metric, margin, feedback, min_rows)
    if decision.decision != "promoted":
        return decision
    if lease is not None and not lease.held:
        return _refused(decision, "this run lost its single-flight lease; not promoting")
    try:
        store.promote(meta.version, actor=actor, expected=started_from)
    except AliasConflict as exc:
        return _refused(decision, f"{exc.message} (changed while this run trained)")
    return decision


def record_decision(store: ModelStore, version: int, decision: GateDecision | None) -> None:
    """Keep the gate's decision in the version's metadata, then (re)write its model card."""
    if decision is not None:
        store.update_metadata(version, gate=decision)
        logger.info("gate {} v{}: {}", decision.decision, version, decision.reason)
    try:
        write_card(store, version)
    except OSError as exc:  # the card is documentation; the version itself is registered
        logger.warning("could not write the model card of v{}: {}", version, exc)


def _refused(decision: GateDecision, reason: str) -> GateDecision:
    logger.warning("not promoting: {}", reason)
    return decision.model_copy(update={"decision": "rejected", "reason": reason})

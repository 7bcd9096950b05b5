"""What drift monitoring shares between training, the workers and the gateway: the reference
profile kept in each version's metadata, and where and in which shape a check's result lives.

Training builds the profile (training/profile.py), a worker compares the recent inputs with it
(workers/drift.py, workers/monitoring.py) and stores the result under :func:`monitoring_key`;
the gateway only reads that JSON (``GET /models/{name}/monitoring``, the drift metrics).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

OK = "ok"
DRIFT = "drift"
NO_PROFILE = "no_profile"  # the production version has no reference profile (older versions)
NOT_ENOUGH_DATA = "not_enough_data"  # fewer than monitoring.min_rows logged rows
NO_PRODUCTION = "no_production_model"
# Only the gateway says these: no check ran yet for the production version, or none is
# scheduled (a model without a [models.<name>] table, or monitoring.enabled = false).
PENDING = "pending"
NOT_MONITORED = "not_monitored"
Status = Literal[
    "ok", "drift", "no_profile", "not_enough_data", "no_production_model", "pending",
    "not_monitored",
]  # fmt: skip


def monitoring_key(model: str) -> str:
    """String: the JSON of the latest check of ``model`` (:class:`DriftResult`)."""
    return f"mlops:monitoring:{model}"


def drift_retrain_key(model: str) -> str:
    """String with an expiry: a drift-triggered retrain of ``model`` was asked for lately."""
    return f"mlops:monitoring:{model}:retrain"


class FeatureProfile(BaseModel):
    """One feature of the training data: quantile bins and a sample of its values.

    Bins are right-closed: ``(-inf, edges[0]]``, ``(edges[0], edges[1]]``, ...,
    ``(edges[-1], inf)``, so there is one share more than edges. Values that repeat (a
    discrete feature) make fewer bins than asked for: equal edges are merged.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    edges: list[float]
    shares: list[float]  # of the training rows, per bin
    sample: list[float]  # up to monitoring.profile_sample values, for the KS test


class ReferenceProfile(BaseModel):
    """What a version was trained on, as drift monitoring compares recent inputs with it."""

    model_config = ConfigDict(frozen=True)

    rows: int  # rows it describes
    source: str  # "training split" | "evaluation set"
    features: list[FeatureProfile]
    classes: dict[str, float] = Field(default_factory=dict)  # predicted class -> share


class FeatureDrift(BaseModel):
    name: str
    psi: float
    ks_statistic: float
    ks_p_value: float
    drifted: bool


class DriftResult(BaseModel):
    """One check of one model, as stored under :func:`monitoring_key` (JSON)."""

    model: str
    version: int | None
    status: Status
    checked_at: float  # unix time
    rows: int = 0  # logged rows compared (at most monitoring.window)
    window: int
    min_rows: int
    psi_threshold: float
    ks_p_value: float
    features: list[FeatureDrift] = Field(default_factory=list)
    class_psi: float | None = None
    drifted_features: list[str] = Field(default_factory=list)
    retrain: dict | None = None  # the drift trigger's request: job id, or why none was made
    detail: str = ""

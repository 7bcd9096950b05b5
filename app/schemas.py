"""Request and response shapes, for validation where pydantic fits and for the OpenAPI docs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

JobStatus = Literal["PENDING", "STARTED", "SUCCESS", "FAILURE"]


class PredictBatch(BaseModel):
    """A batch: instances as objects by feature name, or lists in the model's feature order."""

    model_config = ConfigDict(extra="forbid")

    request_id: str | None = Field(None, max_length=200)
    instances: list[dict[str, float] | list[float]] = Field(min_length=1)


class PredictSingle(BaseModel):
    """One instance: its features as top-level fields (the production model's feature names)."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "example": {
                "request_id": "integration-test-id",
                "sepal_length": 5.1,
                "sepal_width": 3.5,
                "petal_length": 1.4,
                "petal_width": 0.2,
            }
        },
    )

    request_id: str | None = Field(None, max_length=200)


class JobError(BaseModel):
    reason: str
    message: str


class JobPublic(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())

    job_id: str
    status: JobStatus
    request_id: str | None = None
    kind: str | None = None
    model_name: str | None = None
    model_version: int | None = None
    api_version: str | None = None
    predictions: list[Any] | None = None
    probabilities: list[list[float]] | None = None
    classes: list[Any] | None = None
    error: JobError | None = None
    progress: dict[str, Any] | None = None
    result: dict[str, Any] | None = None


class JobAccepted(BaseModel):
    job_id: str
    status: JobStatus
    request_id: str | None = None
    kind: str | None = None
    location: str
    deduplicated: bool = False


class ErrorPublic(BaseModel):
    detail: Any
    reason: str | None = None


class VersionPublic(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    api_version: str
    model_name: str
    model_version: int | None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorPublic, "description": "Missing or invalid API key"},
    403: {"model": ErrorPublic, "description": "The key lacks the needed scope"},
    503: {"model": ErrorPublic, "description": "Redis unavailable or no production model"},
}

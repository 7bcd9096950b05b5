"""Request and response shapes of the gateway, for the OpenAPI docs (the job's: core/jobs.py).

POST /predict is parsed by hand (app/services/rows.py), within the limits declared here.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MAX_REQUEST_ID = 200  # characters; app/services/rows.py enforces it on the measured path


class PredictBatch(BaseModel):
    """A batch: instances as objects by feature name, or lists in the model's feature order."""

    model_config = ConfigDict(extra="forbid")

    request_id: str | None = Field(None, max_length=MAX_REQUEST_ID)
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

    request_id: str | None = Field(None, max_length=MAX_REQUEST_ID)


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

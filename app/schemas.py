"""Request and response shapes of the gateway, for the OpenAPI docs (the job's: core/jobs.py).

POST /predict is parsed by hand (app/services/rows.py), within the limits declared here.
"""

from __future__ import annotations

from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    model_validator,
)

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


# -- feedback (app/api/routes/feedback.py; parsed by hand like /predict, to these models) ------
MAX_JOB_ID = 100  # characters: ids are UUIDs (36)
Label = StrictStr | StrictInt | StrictFloat | StrictBool  # a class as JSON has it: no coercion


class FeedbackItem(BaseModel):
    """The true label of one logged prediction, named by its job id or its request id (the
    caller's latest job with it)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"example": {"job_id": "0b6c1b4e-...", "label": "setosa"}},
    )

    job_id: str | None = Field(None, min_length=1, max_length=MAX_JOB_ID)
    request_id: str | None = Field(None, min_length=1, max_length=MAX_REQUEST_ID)
    label: Label | list[Label] = Field(
        description="One of the model's classes; a job of several rows takes a list, one per row"
    )

    @model_validator(mode="after")
    def _one_id(self) -> FeedbackItem:
        if (self.job_id is None) == (self.request_id is None):
            raise ValueError("give exactly one of job_id and request_id")
        return self


class FeedbackBatch(BaseModel):
    """Several labels at once (a plain JSON list of items is taken too): all or none."""

    model_config = ConfigDict(extra="forbid")

    items: list[FeedbackItem] = Field(min_length=1)


class FeedbackItemPublic(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    job_id: str
    request_id: str | None
    model_version: int
    status: str = Field(description="`recorded`, or `repeat` (the same label was already recorded)")


class FeedbackPublic(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    recorded: int = Field(description="Labels (rows) recorded by this request")
    repeats: int = Field(description="Items whose label was already recorded: not counted again")
    items: list[FeedbackItemPublic]
    retrain: dict[str, Any] | None = Field(
        None, description="The retrain it queued or joined (`feedback.retrain_after_labels`)"
    )


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


# -- the Open Inference Protocol (KServe V2), as its REST specification writes them -----------
# Served by hand (app/api/routes/v2.py, app/services/tensors.py); these describe it.
Parameters = dict[str, str | float | bool]
TensorData = list[Any]  # flat (row-major) or nested as the shape


class V2Error(BaseModel):
    error: str


class V2ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class V2ServerLive(BaseModel):
    live: bool


class V2ServerReady(BaseModel):
    ready: bool


class V2ModelReady(BaseModel):
    name: str
    ready: bool


class V2MetadataTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class V2ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[V2MetadataTensor]
    outputs: list[V2MetadataTensor]


class V2RequestInput(BaseModel):
    name: str = Field(examples=["input-0"])
    shape: list[int] = Field(examples=[[1, 4]])
    datatype: str = Field(examples=["FP64"])
    parameters: Parameters | None = None
    data: TensorData = Field(examples=[[5.1, 3.5, 1.4, 0.2]])


class V2RequestOutput(BaseModel):
    name: str = Field(examples=["label"])
    parameters: Parameters | None = None


class V2InferenceRequest(BaseModel):
    id: str | None = Field(None, max_length=MAX_REQUEST_ID)
    parameters: Parameters | None = None
    inputs: list[V2RequestInput] = Field(min_length=1, max_length=1)
    outputs: list[V2RequestOutput] | None = None


class V2ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: TensorData


class V2InferenceResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    model_version: str
    id: str
    parameters: Parameters
    outputs: list[V2ResponseOutput]


V2_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": V2Error, "description": "Bad request: the message names the problem"},
    401: {"model": V2Error, "description": "Missing or invalid API key"},
    403: {"model": V2Error, "description": "The key lacks the `predict` scope"},
    404: {"model": V2Error, "description": "No such model or version"},
    503: {"model": V2Error, "description": "Redis unavailable or no production model"},
}

"""The two yardsticks, run under the same uvicorn as the gateway.

- ``echo_app``: FastAPI echoing the same body, no model: the ceiling for any gateway here.
- ``inprocess_app``: the seed's shape: a pydantic body, a ``def`` route, ``model.predict``
  on one row inside the web process.

Both read the model folder from BENCH_MODEL_DIR (set by benchmarks/run.py).
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI
from pydantic import BaseModel

echo_app = FastAPI()


@echo_app.post("/predict")
async def echo(body: dict) -> dict:
    return body


class IrisFeatures(BaseModel):
    request_id: str | None = None
    sepal_length: float
    sepal_width: float
    petal_length: float
    petal_width: float


def _model():
    import joblib

    return joblib.load(Path(os.environ["BENCH_MODEL_DIR"]) / "model.joblib")


inprocess_app = FastAPI()
_MODEL = _model() if "BENCH_MODEL_DIR" in os.environ else None


@inprocess_app.post("/predict")
def predict(features: IrisFeatures) -> dict:
    row = [
        [features.sepal_length, features.sepal_width, features.petal_length, features.petal_width]
    ]
    return {
        "request_id": features.request_id,
        "predictions": _MODEL.predict(row).tolist(),
        "probabilities": _MODEL.predict_proba(row).tolist(),
    }

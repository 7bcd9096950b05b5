"""A test-only classifier that misbehaves on magic inputs, for the fault tests.

It wraps a fitted pipeline and predicts like it, except when a row's first feature is:

- ``SLOW`` (777): sleep for the row's second feature in seconds, then predict normally;
- ``POISON`` (666): kill the process at once (``os._exit``), as a segfaulting model would;
- ``HUNG`` (888): never return, ignoring even Celery's soft time limit (C code stuck in a loop),
  so only the hard time limit can end it.

The worker unpickles it from an artifact, so it imports this module by name: the worker's
working directory is the project root, where ``tests`` is a package.
"""

from __future__ import annotations

import io
import os
import time

import joblib
import numpy as np

SLOW = 777.0
POISON = 666.0
HUNG = 888.0


class FaultyClassifier:
    def __init__(self, inner):
        self.inner = inner

    @property
    def classes_(self):
        return self.inner.classes_

    def _misbehave(self, matrix: np.ndarray) -> None:
        first = matrix[:, 0]
        if (first == POISON).any():
            os._exit(1)
        if (first == HUNG).any():
            while True:
                try:
                    time.sleep(3600)
                except BaseException:  # noqa: S112 - a hung native call ignores signals too
                    continue
        slow = matrix[first == SLOW]
        if len(slow):
            time.sleep(float(slow[:, 1].max()))

    def predict(self, matrix):
        self._misbehave(np.asarray(matrix, dtype=np.float64))
        return self.inner.predict(matrix)

    def predict_proba(self, matrix):
        return self.inner.predict_proba(matrix)


def faulty_artifact(inner) -> bytes:
    """joblib bytes of ``inner`` wrapped in :class:`FaultyClassifier`."""
    buffer = io.BytesIO()
    joblib.dump(FaultyClassifier(inner), buffer)
    return buffer.getvalue()


def register_faulty_version(artifacts_dir, model_name: str = "iris", promote: bool = True) -> int:
    """Register the production model wrapped in FaultyClassifier as a new version; promote it."""
    from tests.factories import store_at
    from training.serialization import loads_model

    store = store_at(artifacts_dir, model_name, "joblib")  # signed with the session's key
    meta, data = store.read_artifact(store.require_production())
    inner = loads_model(data, meta.artifact_format)
    new = store.register(
        faulty_artifact(inner),
        meta.model_copy(update={"artifact_file": "model.joblib", "artifact_format": "joblib"}),
    )
    if promote:
        store.promote(new.version)
    return new.version


def faulty_template(workdir):
    """Artifacts trained once for a test module: v1 (iris), v2 = v1 wrapped in
    FaultyClassifier, in production. Returns their folder."""
    from tests.integration.stack import Stack, running

    with running(Stack(workdir), Stack.start_redis) as builder:
        result = builder.train()
        assert result.returncode == 0, result.stderr
        register_faulty_version(builder.artifacts)
    return builder.artifacts

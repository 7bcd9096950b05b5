"""Artifact bytes <-> fitted pipelines, in joblib or skops format.

Bytes only come from :meth:`core.store.ModelStore.read_artifact`, which checks the version's
signature and the bytes' signed sha256 first, and reads only the format of the settings
(``training.artifact_format``), whatever the metadata says. joblib is pickle: it runs code
from the artifact, so it is only as safe as the signing key; skops loads without executing
code and here trusts only the types our pipelines are known to contain.
"""

from __future__ import annotations

import io

import joblib
import sklearn
from loguru import logger

from core.errors import IncompatibleArtifact
from core.settings import Settings
from core.store import ARTIFACT_FILES, ModelMetadata, ModelStore

FORMATS = tuple(ARTIFACT_FILES)

# Types skops does not trust by default but that the allow-listed scikit-learn classifiers
# contain (found with skops.io.get_untrusted_types on fitted pipelines). Anything else is
# refused, so a crafted .skops file cannot make us construct arbitrary objects.
TRUSTED_SKOPS_TYPES = frozenset(
    {
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.metrics._dist_metrics.EuclideanDistance64",
        "sklearn.neighbors._kd_tree.KDTree",
        "sklearn.neighbors._ball_tree.BallTree",
    }
)


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise IncompatibleArtifact(f"unknown artifact format {fmt!r}; expected one of {FORMATS}")


def dump_model(estimator, fmt: str) -> bytes:
    """Serialize a fitted estimator to bytes in ``fmt`` ("joblib" or "skops")."""
    _check_format(fmt)
    if fmt == "skops":
        import skops.io as sio

        return sio.dumps(estimator)
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer)
    return buffer.getvalue()


def untrusted_skops_types(data: bytes) -> list[str]:
    """Types in a skops artifact that neither skops nor :data:`TRUSTED_SKOPS_TYPES` trust."""
    import skops.io as sio

    return sorted(set(sio.get_untrusted_types(data=data)) - TRUSTED_SKOPS_TYPES)


def loads_model(data: bytes, fmt: str):
    """Deserialize verified bytes. Used by :func:`load_model` and to check a fresh artifact."""
    _check_format(fmt)
    if fmt == "skops":
        import skops.io as sio

        refused = untrusted_skops_types(data)
        if refused:
            raise IncompatibleArtifact(
                f"skops artifact contains types that are not trusted: {', '.join(refused)}"
            )
        trusted = sorted(set(sio.get_untrusted_types(data=data)))
        return sio.loads(data, trusted=trusted)
    return joblib.load(io.BytesIO(data))


def check_compatible(meta: ModelMetadata, allow_mismatch: bool) -> None:
    """Refuse an artifact pickled by another scikit-learn version (unless allowed)."""
    if meta.sklearn_version == sklearn.__version__:
        return
    message = (
        f"{meta.name} v{meta.version} was trained with scikit-learn {meta.sklearn_version}, "
        f"this process has {sklearn.__version__}"
    )
    if not allow_mismatch:
        raise IncompatibleArtifact(
            f"{message}; retrain it or set training.allow_sklearn_mismatch = true"
        )
    logger.warning("{}; loading anyway (training.allow_sklearn_mismatch)", message)


def load_model(store: ModelStore, version: int, settings: Settings) -> tuple[ModelMetadata, object]:
    """Metadata and fitted pipeline of ``version``, after signature, integrity and version
    checks, deserialized in the format of the settings (the store's), never the metadata's."""
    fmt = str(settings.training.artifact_format)
    if fmt != store.artifact_format:
        raise IncompatibleArtifact(
            f"this store reads {store.artifact_format} artifacts, the settings say {fmt}"
        )
    meta, data = store.read_artifact(version)  # raises before any byte is deserialized
    check_compatible(meta, bool(settings.training.allow_sklearn_mismatch))
    return meta, loads_model(data, fmt)

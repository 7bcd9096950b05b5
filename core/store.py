"""The model store: versioned artifacts with metadata, aliases and integrity checks.

Layout (local backend)::

    artifacts/<model>/<version>/model.joblib     the artifact (or model.skops)
    artifacts/<model>/<version>/metadata.json    ModelMetadata, incl. the artifact's sha256
                                                 and the signature of its statement
    artifacts/<model>/<version>/card.html        the model card
    artifacts/<model>/aliases.json               {"production": 3, "history": [1, 2]}

Storage sits behind the small :class:`Storage` interface (list, read, write a new version,
read/update aliases): :class:`LocalStorage` here, ``S3Storage`` (core/object_store.py) for an
``s3://`` artifacts_url; :func:`open_store` picks one. The store itself never unpickles
anything: it hands out verified bytes.

Whoever can write the folder is not trusted to say what gets loaded: :meth:`ModelStore.register`
signs each version's statement (:func:`signed_statement`) with the private key training holds,
and every reader checks that signature with public keys from settings, and takes the artifact
format (hence the file name) from settings too, before it reads a byte of the artifact.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from loguru import logger
from pydantic import BaseModel, ConfigDict, Field

from core.artifact_cache import ArtifactCache
from core.errors import (
    AliasConflict,
    IncompatibleArtifact,
    IntegrityError,
    ModelNotFound,
    NoProductionModel,
)
from core.monitoring import ReferenceProfile
from core.settings import MODEL_NAME, Settings, resolve_path
from core.signing import Signature, SigningKeys

ANY_PRODUCTION = object()  # promote() without a compare-and-set on the current production
METADATA_FILE = "metadata.json"
ALIASES_FILE = "aliases.json"
MAX_VERSION_RACE = 1000
ARTIFACT_FILES = {"joblib": "model.joblib", "skops": "model.skops"}  # format -> file name
STATEMENT = "two-mlops model version, v1"  # what a signature is for: never valid elsewhere
SIGNED_FIELDS = frozenset(
    {"name", "version", "artifact_file", "artifact_format", "artifact_sha256", "features"}
    | {"classes", "sklearn_version", "signature"}
)


class FeatureSpec(BaseModel):
    name: str
    type: str = "float"


class GateDecision(BaseModel):
    decision: str  # "promoted" | "rejected"
    reason: str
    metric: str
    candidate: float  # on its own held-out split
    production: float | None = None  # ...on its own, as recorded
    production_version: int | None = None
    margin: float = 0.0
    # Both on the same most recent labelled feedback the candidate did not train on
    # (training/gate.py): decisive from feedback.gate_min_rows rows.
    feedback_rows: int = 0
    feedback_candidate: float | None = None
    feedback_production: float | None = None
    decided_on: str = "held-out split"  # | "recent feedback"


class DataPart(BaseModel):
    """One part of a version's training data: its sha256 fingerprint and size."""

    fingerprint: str
    rows: int
    source: str = ""
    until: str | None = None  # feedback: the time (UTC) of the newest label included


class DataVersion(BaseModel):
    """What a version learned from: the trainer's base data and the labelled feedback so far
    (core/datasets.py); ``data_fingerprint`` is their combined fingerprint."""

    base: DataPart
    feedback: DataPart


class SourceFile(BaseModel):
    """The file a registered version came from (``python -m training register``), not trained."""

    path: str
    format: str  # "joblib" | "skops": the file's, maybe not the artifact's
    sha256: str


class AuditEntry(BaseModel):
    """Who changed what about a version, and when (also logged as an ``audit:`` line)."""

    at: str
    action: str  # "registered" | "promoted" | "rolled back to"
    by: str
    detail: str = ""


class ModelMetadata(BaseModel):
    """Everything a reviewer, the gateway (feature schema) and a loader need to know."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    name: str
    version: int = 0
    trainer: str
    params: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    features: list[FeatureSpec]
    classes: list[Any] = Field(default_factory=list)
    data_fingerprint: str
    n_train: int = 0
    n_test: int = 0
    trained_at: str
    python_version: str
    sklearn_version: str
    joblib_version: str
    numpy_version: str = ""
    artifact_file: str
    artifact_format: str = "joblib"
    artifact_sha256: str = ""
    gate: GateDecision | None = None
    confusion_matrix: list[list[int]] | None = None
    source: SourceFile | None = None  # set for registered versions; trained ones have None
    # Why it was trained: core/single_flight.py TRIGGERS ("drift": trigger_detail names the
    # drifted features, workers/monitoring.py). None: older versions.
    trigger: str | None = None
    trigger_detail: dict[str, Any] | None = None
    data: DataVersion | None = None  # trained versions since feedback (older ones: None)
    # The data it was trained on, for drift monitoring (core/monitoring.py). None: older
    # versions, and registered ones without an evaluation set.
    reference_profile: ReferenceProfile | None = None
    audit: list[AuditEntry] = Field(default_factory=list)
    signature: Signature | None = None  # of signed_statement(self), by the training key

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]


def signed_statement(meta: ModelMetadata) -> bytes:
    """What a version's signature covers, as canonical JSON (sorted keys, no whitespace).

    Everything that decides which bytes are loaded, how, and how requests are validated:
    model and version (so a signed folder cannot be replayed under another number), artifact
    file, format and sha256, features, classes, scikit-learn version. Metrics, the gate
    decision and the rest are documentation; they may change after registration.
    """
    statement = {
        "statement": STATEMENT,
        "model": meta.name,
        "version": meta.version,
        "artifact_file": meta.artifact_file,
        "artifact_format": meta.artifact_format,
        "artifact_sha256": meta.artifact_sha256,
        "features": [f.model_dump(mode="json") for f in meta.features],
        "classes": meta.classes,
        "sklearn_version": meta.sklearn_version,
    }
    return json.dumps(statement, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


class Aliases(BaseModel):
    production: int | None = None
    history: list[int] = Field(default_factory=list)  # earlier production versions, oldest first


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Storage(Protocol):
    """What the store needs from a backend."""

    def list_models(self) -> list[str]: ...

    def list_versions(self, model: str) -> list[int]: ...

    def read(self, model: str, version: int, name: str) -> bytes: ...

    def write_new_version(self, model: str, files: Callable[[int], dict[str, bytes]]) -> int: ...

    def write(self, model: str, version: int, name: str, data: bytes) -> None: ...

    def read_aliases(self, model: str) -> bytes | None: ...

    def update_aliases(self, model: str, change: Callable[[bytes | None], bytes]) -> bytes: ...

    def aliases_token(self, model: str) -> object: ...

    def write_data(self, model: str, path: str, data: bytes) -> None: ...

    def list_data(self, model: str, prefix: str) -> list[str]: ...

    def read_data(self, model: str, path: str) -> bytes: ...


DATA_FOLDER = "data"  # <model>/data/<path>: data sets (prediction logs, feedback), not versions
_DATA_PATH = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


def data_path(path: str) -> str:
    """``path`` if it is a plain relative path (letters, digits, ``._-``, no ``..``)."""
    if not _DATA_PATH.fullmatch(path) or any(part in (".", "..") for part in path.split("/")):
        raise ValueError(f"not a data path: {path!r}")
    return path


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class LocalStorage:
    """A folder on a local (or shared) file system. Renames make every write atomic."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _model_dir(self, model: str) -> Path:
        path = self.root / model
        path.mkdir(parents=True, exist_ok=True)
        return path

    def list_models(self) -> list[str]:
        """Models with versions or aliases here (folder names that are model names)."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and re.fullmatch(MODEL_NAME, p.name)
        )

    def list_versions(self, model: str) -> list[int]:
        folder = self.root / model
        if not folder.is_dir():
            return []
        return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())

    def read(self, model: str, version: int, name: str) -> bytes:
        path = self.root / model / str(version) / name
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise ModelNotFound(f"model {model!r} has no version {version} ({name})") from None

    def write_new_version(self, model: str, files: Callable[[int], dict[str, bytes]]) -> int:
        """Stage files in a hidden folder, then rename it to the next free version number.

        ``rename`` onto an existing non-empty folder fails, so two writers finishing at the
        same moment get different numbers; the loser rewrites its files for the next number.
        """
        folder = self._model_dir(model)
        staging = folder / f".incoming-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            version = max(self.list_versions(model), default=0) + 1
            for _ in range(MAX_VERSION_RACE):
                for name, data in files(version).items():
                    _atomic_write(staging / name, data)
                try:
                    os.rename(staging, folder / str(version))
                    return version
                except OSError:
                    version = max(max(self.list_versions(model), default=0), version) + 1
            raise RuntimeError(f"could not allocate a version for {model!r}")
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def write(self, model: str, version: int, name: str, data: bytes) -> None:
        folder = self.root / model / str(version)
        if not folder.is_dir():
            raise ModelNotFound(f"model {model!r} has no version {version}")
        _atomic_write(folder / name, data)

    def read_aliases(self, model: str) -> bytes | None:
        try:
            return (self.root / model / ALIASES_FILE).read_bytes()
        except FileNotFoundError:
            return None

    @contextlib.contextmanager
    def _locked(self, model: str) -> Iterator[None]:
        with open(self._model_dir(model) / ".aliases.lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def update_aliases(self, model: str, change: Callable[[bytes | None], bytes]) -> bytes:
        with self._locked(model):
            data = change(self.read_aliases(model))
            _atomic_write(self._model_dir(model) / ALIASES_FILE, data)
            return data

    def aliases_token(self, model: str) -> object:
        """Changes whenever the aliases file is replaced; a stat, cheap enough per batch."""
        try:
            st = os.stat(self.root / model / ALIASES_FILE)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def write_data(self, model: str, path: str, data: bytes) -> None:
        target = self.root / model / DATA_FOLDER / data_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(target, data)

    def list_data(self, model: str, prefix: str) -> list[str]:
        """Data files whose path starts with ``prefix`` (a folder: ``feedback/``), sorted."""
        base = self.root / model / DATA_FOLDER
        if not base.is_dir():
            return []
        files = (p for p in base.rglob("*") if p.is_file() and not p.name.startswith("."))
        return sorted(
            p for p in (f.relative_to(base).as_posix() for f in files) if p.startswith(prefix)
        )

    def read_data(self, model: str, path: str) -> bytes:
        return (self.root / model / DATA_FOLDER / data_path(path)).read_bytes()


class ModelStore:
    """Versions, metadata, aliases and verified artifact bytes for one model name.

    ``keys`` sign what :meth:`register` writes (if they hold the private key) and verify
    what is read; ``artifact_format`` (``training.artifact_format``) is the only format read.
    """

    def __init__(
        self,
        storage: Storage,
        model_name: str,
        keys: SigningKeys,
        artifact_format: str,
        cache: ArtifactCache | None = None,
    ):
        if artifact_format not in ARTIFACT_FILES:
            raise IncompatibleArtifact(
                f"unknown artifact format {artifact_format!r}; expected one of "
                f"{tuple(ARTIFACT_FILES)}"
            )
        self.storage = storage
        self.model_name = model_name
        self.keys = keys
        self.artifact_format = artifact_format
        self.cache = cache  # downloaded artifacts by sha256 (object storage only)

    # -- versions ---------------------------------------------------------------------------
    def versions(self) -> list[int]:
        return self.storage.list_versions(self.model_name)

    def metadata(self, version: int) -> ModelMetadata:
        raw = self.storage.read(self.model_name, version, METADATA_FILE)
        return ModelMetadata.model_validate_json(raw)

    def all_metadata(self) -> list[ModelMetadata]:
        return [self.metadata(v) for v in self.versions()]

    def register(self, artifact: bytes, metadata: ModelMetadata) -> ModelMetadata:
        """Write a new version: the artifact, and metadata with its sha256, signed once the
        version number is known (so the number is signed too); return its metadata."""
        self.keys.require_signer()
        if ARTIFACT_FILES.get(metadata.artifact_format) != metadata.artifact_file:
            raise IncompatibleArtifact(
                f"artifact file {metadata.artifact_file!r} does not go with format "
                f"{metadata.artifact_format!r}"
            )
        digest = sha256_hex(artifact)

        def files(version: int) -> dict[str, bytes]:
            meta = metadata.model_copy(
                update={"name": self.model_name, "version": version, "artifact_sha256": digest}
            )
            meta = self._signed(meta)
            return {
                meta.artifact_file: artifact,
                METADATA_FILE: meta.model_dump_json(indent=2).encode(),
            }

        version = self.storage.write_new_version(self.model_name, files)
        return self.metadata(version)

    def _signed(self, meta: ModelMetadata) -> ModelMetadata:
        # Sign what a reader will parse: the metadata after its JSON round trip.
        unsigned = meta.model_copy(update={"signature": None}).model_dump_json()
        meta = ModelMetadata.model_validate_json(unsigned)
        return meta.model_copy(update={"signature": self.keys.sign(signed_statement(meta))})

    def sign(self, version: int) -> ModelMetadata:
        """Vouch for an existing version (e.g. one registered before signing existed): sign its
        statement with the private key, after its bytes match its recorded sha256."""
        self.keys.require_signer()
        meta = self.metadata(version)
        what = f"{self.model_name} v{version}"
        if meta.name != self.model_name or meta.version != version:
            raise IntegrityError(
                f"{what}: its metadata describes {meta.name} v{meta.version}; not signing it"
            )
        if ARTIFACT_FILES.get(meta.artifact_format) != meta.artifact_file:
            raise IntegrityError(
                f"{what}: artifact file {meta.artifact_file!r} does not go with format "
                f"{meta.artifact_format!r}; not signing it"
            )
        data = self.storage.read(self.model_name, version, meta.artifact_file)
        if not meta.artifact_sha256 or sha256_hex(data) != meta.artifact_sha256:
            raise IntegrityError(
                f"{what}: the artifact does not match its recorded sha256; not signing it"
            )
        signed = self._signed(meta)
        self.storage.write(
            self.model_name, version, METADATA_FILE, signed.model_dump_json(indent=2).encode()
        )
        return signed

    def update_metadata(self, version: int, **fields: Any) -> ModelMetadata:
        """Change fields outside the signed statement (gate decision, notes...)."""
        signed = SIGNED_FIELDS.intersection(fields)
        if signed:
            raise ValueError(f"{sorted(signed)} are signed at registration and cannot change")
        meta = self.metadata(version).model_copy(update=fields)
        self.storage.write(
            self.model_name, version, METADATA_FILE, meta.model_dump_json(indent=2).encode()
        )
        return meta

    def write_file(self, version: int, name: str, data: bytes) -> None:
        if name in (METADATA_FILE,):
            raise ValueError("use update_metadata to change metadata")
        self.storage.write(self.model_name, version, name, data)

    def read_file(self, version: int, name: str) -> bytes:
        return self.storage.read(self.model_name, version, name)

    # -- data sets: prediction logs and feedback, flushed (workers/flusher.py) ----------------
    def write_data(self, path: str, data: bytes) -> None:
        """Write ``<model>/data/<path>`` (whole, atomically)."""
        self.storage.write_data(self.model_name, data_path(path), data)

    def list_data(self, prefix: str = "") -> list[str]:
        return self.storage.list_data(self.model_name, prefix)

    def read_data(self, path: str) -> bytes:
        return self.storage.read_data(self.model_name, data_path(path))

    def signed_metadata(self, version: int) -> ModelMetadata:
        """Metadata whose statement is signed by a trusted key, for this model and version."""
        meta = self.metadata(version)
        what = f"{self.model_name} v{version}"
        try:
            statement = signed_statement(meta)
        except ValueError:  # NaN or infinity in classes: training never writes that
            raise IntegrityError(f"{what}: its metadata is not plain JSON; refusing it") from None
        self.keys.verify(statement, meta.signature, what)
        if meta.name != self.model_name or meta.version != version:
            raise IntegrityError(
                f"{what}: its metadata is signed for {meta.name} v{meta.version}; refusing it"
            )
        return meta

    def read_artifact(self, version: int) -> tuple[ModelMetadata, bytes]:
        """Signed metadata and the artifact's bytes, in the configured format, only after they
        match the signed sha256. Nothing is read from the artifact before the signature holds."""
        meta = self.signed_metadata(version)
        if meta.artifact_format != self.artifact_format:
            raise IncompatibleArtifact(
                f"{self.model_name} v{version} is a {meta.artifact_format} artifact and this "
                f"deployment loads {self.artifact_format} only (training.artifact_format); "
                f"refusing it: promote a {self.artifact_format} version or retrain"
            )
        cached = self.cache.get(meta.artifact_sha256) if self.cache else None
        if cached is not None:  # hashes to the signed sha256: as good as the store's copy
            return meta, cached
        data = self.storage.read(self.model_name, version, ARTIFACT_FILES[self.artifact_format])
        if sha256_hex(data) != meta.artifact_sha256:
            raise IntegrityError(
                f"artifact of {self.model_name} v{version} does not match its signed sha256; "
                "refusing to load it"
            )
        if self.cache is not None:
            self.cache.put(meta.artifact_sha256, data)
        return meta, data

    def verify(self, version: int) -> ModelMetadata:
        return self.read_artifact(version)[0]

    # -- aliases ----------------------------------------------------------------------------
    def aliases(self) -> Aliases:
        raw = self.storage.read_aliases(self.model_name)
        return Aliases.model_validate_json(raw) if raw else Aliases()

    def aliases_token(self) -> object:
        return self.storage.aliases_token(self.model_name)

    def production_version(self) -> int | None:
        return self.aliases().production

    def require_production(self) -> int:
        version = self.production_version()
        if version is None:
            raise NoProductionModel(
                f"no production version of {self.model_name!r} yet; "
                "train one with `python -m training train` or POST /retrain"
            )
        return version

    def _change_aliases(self, change: Callable[[Aliases], Aliases]) -> Aliases:
        def apply(raw: bytes | None) -> bytes:
            current = Aliases.model_validate_json(raw) if raw else Aliases()
            return change(current).model_dump_json().encode()

        return Aliases.model_validate_json(self.storage.update_aliases(self.model_name, apply))

    def promote(
        self, version: int, *, actor: str = "unknown", expected: object = ANY_PRODUCTION
    ) -> Aliases:
        """Make ``version`` production; the old production goes on the rollback history.

        ``expected``: promote only if production is still this version (None: no production),
        checked under the aliases lock; otherwise AliasConflict. A training run passes the
        version it was gated against, so it never overwrites a manual promote or rollback
        made while it ran.
        """
        if version not in self.versions():
            raise ModelNotFound(f"model {self.model_name!r} has no version {version}")
        self.verify(version)

        def change(aliases: Aliases) -> Aliases:
            if expected is not ANY_PRODUCTION and aliases.production != expected:
                raise AliasConflict(
                    f"production of {self.model_name!r} changed from {_v(expected)} to "
                    f"{_v(aliases.production)} meanwhile; not promoting v{version} over it"
                )
            history = list(aliases.history)
            if aliases.production is not None and aliases.production != version:
                history.append(aliases.production)
            return Aliases(production=version, history=history)

        before = self.production_version()
        aliases = self._change_aliases(change)
        self.audit(version, "promoted", actor, f"production {_v(before)} -> v{version}")
        return aliases

    def rollback(self, *, actor: str = "unknown") -> Aliases:
        """Go back to the previous production version (skipping any that fail verification)."""
        before = self.production_version()

        def change(aliases: Aliases) -> Aliases:
            history = list(aliases.history)
            while history:
                candidate = history.pop()
                if candidate == aliases.production:
                    continue
                try:
                    self.verify(candidate)
                except (ModelNotFound, IntegrityError, IncompatibleArtifact):
                    continue
                return Aliases(production=candidate, history=history)
            raise AliasConflict(
                f"model {self.model_name!r} has no previous production version to roll back to"
            )

        aliases = self._change_aliases(change)
        detail = f"production {_v(before)} -> v{aliases.production}"
        self.audit(aliases.production, "rolled back to", actor, detail)
        return aliases

    def audit(self, version: int, action: str, actor: str, detail: str = "") -> None:
        """Record who did what to ``version``: an ``audit:`` log line and an entry in its
        metadata (best effort there: the change itself has already happened)."""
        logger.bind(audit=True).info(
            "audit: {} {} {} v{} ({})", actor, action, self.model_name, version, detail
        )
        entry = AuditEntry(at=datetime.now(UTC).isoformat(), action=action, by=actor, detail=detail)
        try:
            meta = self.metadata(version)
            self.update_metadata(version, audit=[*meta.audit, entry])
        except (OSError, ModelNotFound) as exc:
            logger.warning("could not record the audit entry in v{}: {}", version, exc)


def _v(version: object) -> str:
    return "none" if version is None else f"v{version}"


def open_storage(settings: Settings) -> Storage:
    """The configured backend: ``artifacts_url`` (s3://... or a path), else ``artifacts_dir``.
    One per process and URL: an S3 client holds connections, and s3fs refuses one made
    before a fork (Celery's pool children make their own)."""
    url = settings.artifacts_url or settings.artifacts_dir
    if "://" not in url:
        return LocalStorage(resolve_path(url))
    poll = settings.worker.model_poll_seconds
    return _s3_storage(url, settings.object_store, poll, os.getpid())


@functools.cache
def _s3_storage(url: str, options: Any, poll_seconds: float, _pid: int) -> Storage:
    from core.object_store import S3Storage

    return S3Storage(url, options, poll_seconds)


def check_storage(settings: Settings) -> None:
    """At start-up: stop with a clear message (the URL, password masked) if the object store
    does not answer, so that no part starts half-way."""
    from core.settings import SettingsError

    storage = open_storage(settings)
    check = getattr(storage, "check", None)
    if check is None:
        return
    try:
        check()
    except ConnectionError as exc:
        raise SettingsError(f"cannot start: {exc}") from None


def open_store(settings: Settings, model: str | None = None) -> ModelStore:
    """The store of ``model`` (None: the default model), on the configured backend, with the
    configured signing keys and artifact format."""
    storage = open_storage(settings)
    cache = None
    if not isinstance(storage, LocalStorage):
        cache = ArtifactCache(resolve_path(settings.object_store.cache_dir))
    return ModelStore(
        storage,
        model or settings.default_model,
        SigningKeys.from_settings(settings),
        str(settings.training.artifact_format),
        cache,
    )

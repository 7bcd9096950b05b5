"""The models of one worker process: loaded on first use, swapped when an alias moves, evicted
least recently used beyond a memory bound.

:class:`ModelCache` follows one model's production alias. ``current()`` is called once per
batch and costs a ``stat`` of the aliases file when nothing changed. A batch keeps the
:class:`LoadedModel` it got, so one job is never computed by two versions, and the version in
a result is the one that computed it. A version that fails its integrity check is refused and
the previous one keeps serving. ``version(v)`` gives a pinned version (the Open Inference
Protocol's ``/versions/{v}``), verified the same way.

Every cache of a process shares one :class:`ModelPool`: loaded versions of every model,
evicted least recently used once their sizes pass ``worker.model_cache_bytes``, so a worker
that serves many models does not grow without limit. An evicted production version is loaded
again (and verified again) the next time a batch needs it.
"""

from __future__ import annotations

import pickle
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loguru import logger

from core.errors import NoProductionModel
from core.store import ModelMetadata, ModelStore


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: int
    estimator: Any
    metadata: ModelMetadata
    load_seconds: float
    size_bytes: int = 0  # pickled size: what the pool counts against its bound

    @property
    def feature_names(self) -> list[str]:
        return self.metadata.feature_names


Loader = Callable[[int], tuple[ModelMetadata, Any]]
Key = tuple[str, int]


class ModelPool:
    """Loaded versions of every model of a process, least recently used evicted past
    ``limit_bytes`` (None: no bound). The newest entry is never evicted, however large."""

    def __init__(self, limit_bytes: int | None = None):
        self.limit_bytes = limit_bytes
        self.used_bytes = 0
        self._entries: OrderedDict[Key, tuple[LoadedModel, Callable[[Key], None] | None]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    def get(self, key: Key) -> LoadedModel | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, model: LoadedModel, on_evict: Callable[[Key], None] | None = None) -> None:
        key = (model.name, model.version)
        evicted = []
        with self._lock:
            if key in self._entries:
                self.used_bytes -= self._entries.pop(key)[0].size_bytes
            self._entries[key] = (model, on_evict)
            self.used_bytes += model.size_bytes
            while (
                self.limit_bytes is not None
                and self.used_bytes > self.limit_bytes
                and len(self._entries) > 1
            ):
                _, (old, callback) = self._entries.popitem(last=False)
                self.used_bytes -= old.size_bytes
                evicted.append((old, callback))
        for old, callback in evicted:  # outside the lock: callbacks take their cache's lock
            logger.info(
                "evicted model {} v{} ({:.1f} MiB) to stay under worker.model_cache_bytes",
                old.name,
                old.version,
                old.size_bytes / 2**20,
            )
            if callback is not None:
                callback((old.name, old.version))

    def __len__(self) -> int:
        return len(self._entries)


class ModelCache:
    """One model's versions in this process: its production (followed) and pinned ones."""

    def __init__(self, store: ModelStore, loader: Loader, pool: ModelPool | None = None):
        self.store = store
        self.loader = loader
        self.pool = pool if pool is not None else ModelPool()
        self._current: LoadedModel | None = None
        self._current_version: int | None = None  # kept when the pool evicts _current
        self._token: object = object()
        self._lock = threading.RLock()  # the pool may call _evicted while this cache loads
        self.on_load: Callable[[LoadedModel], None] | None = None
        # (model name, its production or None), when the served version switched
        self.on_serve: Callable[[str, LoadedModel | None], None] | None = None

    @property
    def served_version(self) -> int | None:
        return self._current_version

    def current(self) -> LoadedModel:
        try:
            self.refresh()
        except OSError as exc:  # the store is away: keep serving the version held
            if self._current_version is None:
                raise
            logger.warning("could not follow the alias of {}: {}", self.store.model_name, exc)
        current = self._current
        if current is None and self._current_version is not None:
            current = self._reload_evicted()
        if current is None:
            raise NoProductionModel(
                f"no production version of {self.store.model_name!r} yet; train one first"
            )
        return current

    def version(self, version: int) -> LoadedModel:
        """A pinned version, loaded and verified on first use; raises why it cannot be."""
        model = self.pool.get((self.store.model_name, version))
        if model is not None:
            return model
        with self._lock:
            return self._load(version, raise_errors=True)

    def refresh(self) -> None:
        """Follow the production alias; cheap when it has not changed."""
        token = self.store.aliases_token()
        if token == self._token:
            return
        with self._lock:
            if token == self._token:
                return
            previous = self._current_version
            version = self.store.production_version()
            if version is None:
                self._current, self._current_version = None, None
            elif version != self._current_version:
                model = self._load(version)
                if model is not None:
                    self._current, self._current_version = model, version
            self._token = token
            if self._current_version != previous and self.on_serve is not None:
                self.on_serve(self.store.model_name, self._current)

    def _reload_evicted(self) -> LoadedModel | None:
        with self._lock:
            if self._current is None and self._current_version is not None:
                self._current = self._load(self._current_version)
            return self._current

    def _evicted(self, key: Key) -> None:
        with self._lock:
            if self._current is not None and key == (self._current.name, self._current.version):
                self._current = None  # reloaded on the next batch that needs it

    def _load(self, version: int, raise_errors: bool = False) -> LoadedModel | None:
        """Under ``self._lock``: from the pool, or loaded, verified and pooled."""
        pooled = self.pool.get((self.store.model_name, version))
        if pooled is not None:
            return pooled
        started = time.perf_counter()
        try:
            metadata, estimator = self.loader(version)
        except Exception as exc:  # tampered, other sklearn, missing, or does not unpickle
            if raise_errors:
                raise
            logger.error(
                "refusing model {} v{}: {}; still serving v{}",
                self.store.model_name,
                version,
                exc,
                self.served_version,
            )
            return None
        model = LoadedModel(
            name=self.store.model_name,
            version=version,
            estimator=estimator,
            metadata=metadata,
            load_seconds=time.perf_counter() - started,
            size_bytes=len(pickle.dumps(estimator, protocol=pickle.HIGHEST_PROTOCOL)),
        )
        self.pool.put(model, self._evicted)
        logger.info("loaded model {} v{} in {:.3f}s", model.name, version, model.load_seconds)
        if self.on_load is not None:
            self.on_load(model)
        return model

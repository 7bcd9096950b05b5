"""The production model of one worker process: loaded once, swapped when the alias moves.

``current()`` is called once per batch and costs a ``stat`` of the aliases file when nothing
changed. A batch keeps the :class:`LoadedModel` it got, so one job is never computed by two
versions, and the version in a result is the one that computed it. A version that fails its
integrity check is refused and the previous one keeps serving.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loguru import logger

from core.errors import NoProductionModel
from core.store import ModelMetadata, ModelStore

KEEP_VERSIONS = 3  # loaded versions kept in memory, so a rollback needs no reload


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: int
    estimator: Any
    metadata: ModelMetadata
    load_seconds: float

    @property
    def feature_names(self) -> list[str]:
        return self.metadata.feature_names


Loader = Callable[[int], tuple[ModelMetadata, Any]]


class ModelCache:
    def __init__(self, store: ModelStore, loader: Loader):
        self.store = store
        self.loader = loader
        self._current: LoadedModel | None = None
        self._loaded: OrderedDict[int, LoadedModel] = OrderedDict()
        self._token: object = object()
        self._lock = threading.Lock()
        self.on_load: Callable[[LoadedModel], None] | None = None
        self.on_serve: Callable[[LoadedModel | None], None] | None = None  # version switched

    @property
    def served_version(self) -> int | None:
        current = self._current
        return current.version if current else None

    def current(self) -> LoadedModel:
        self.refresh()
        current = self._current
        if current is None:
            raise NoProductionModel(
                f"no production version of {self.store.model_name!r} yet; train one first"
            )
        return current

    def refresh(self) -> None:
        """Follow the production alias; cheap when it has not changed."""
        token = self.store.aliases_token()
        if token == self._token:
            return
        with self._lock:
            if token == self._token:
                return
            previous = self._current
            version = self.store.production_version()
            if version is None:
                self._current = None
            elif self._current is None or self._current.version != version:
                model = self._load(version)
                if model is not None:
                    self._current = model
            self._token = token
            if self._current is not previous and self.on_serve is not None:
                self.on_serve(self._current)

    def _load(self, version: int) -> LoadedModel | None:
        if version in self._loaded:
            self._loaded.move_to_end(version)
            return self._loaded[version]
        started = time.perf_counter()
        try:
            metadata, estimator = self.loader(version)
        except Exception as exc:  # tampered, other sklearn, missing, or does not unpickle
            logger.error(
                "refusing model {} v{}: {}; still serving v{}",
                self.store.model_name,
                version,
                exc,
                self.served_version,
            )
            return None
        model = LoadedModel(
            name=metadata.name,
            version=version,
            estimator=estimator,
            metadata=metadata,
            load_seconds=time.perf_counter() - started,
        )
        self._loaded[version] = model
        while len(self._loaded) > KEEP_VERSIONS:
            self._loaded.popitem(last=False)
        logger.info("loaded model {} v{} in {:.3f}s", model.name, version, model.load_seconds)
        if self.on_load is not None:
            self.on_load(model)
        return model

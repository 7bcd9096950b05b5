"""What the gateway knows about models: each production version's feature schema, cached.

The store lives on the (shared) file system; reading it is blocking I/O, so it happens in a
thread, on a timer, never on a request's hot path. Requests read the cached snapshot.
:class:`ModelCatalogs` holds one :class:`ModelCatalog` per model: those of the settings, and
the ones found in the store (registered with ``python -m training register``).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from loguru import logger

from app.errors import clip
from core.errors import IntegrityError, MLOpsError, ModelNotFound, NoProductionModel
from core.settings import Settings
from core.store import ModelMetadata, ModelStore, open_store


@dataclass(frozen=True)
class Production:
    metadata: ModelMetadata
    feature_names: tuple[str, ...]
    feature_set: frozenset[str]

    @property
    def version(self) -> int:
        return self.metadata.version


class ModelCatalog:
    def __init__(self, store: ModelStore, poll_seconds: float = 0.5):
        self.store = store
        self.poll_seconds = poll_seconds
        self.production: Production | None = None
        self._token: object = object()
        self._task: asyncio.Task | None = None
        self._pinned: dict[int, Production] = {}  # versions asked for by number, verified
        self.store_error: str | None = None  # why the last read of the store failed

    @property
    def name(self) -> str:
        return self.store.model_name

    async def pinned(self, version: int) -> Production:
        """A version asked for by number (``/versions/{v}``): its signed metadata, read once;
        ModelNotFound if the model has no such version, IntegrityError if it fails to verify."""
        production = self.production
        if production is not None and production.version == version:
            return production
        found = self._pinned.get(version)
        if found is None:
            metadata = await asyncio.to_thread(self.store.signed_metadata, version)
            names = tuple(metadata.feature_names)
            found = self._pinned[version] = Production(metadata, names, frozenset(names))
        return found

    def require_production(self) -> Production:
        production = self.production
        if production is None:
            raise NoProductionModel(
                f"no production model {self.store.model_name!r} yet; train one with "
                "`python -m training train` (or `make run`) or POST /retrain"
            )
        return production

    def _read(self) -> None:
        token = self.store.aliases_token()
        if token == self._token:
            return
        version = self.store.production_version()
        if version is None:
            self.production = None
        else:
            try:  # requests are validated against features that training signed
                metadata = self.store.signed_metadata(version)
            except IntegrityError as exc:  # like the workers: keep the version we have
                served = self.production.version if self.production else None
                logger.error("model catalog: {}; still validating against v{}", exc, served)
                self._token = token
                return
            names = tuple(metadata.feature_names)
            self.production = Production(metadata, names, frozenset(names))
        self._token = token

    async def refresh(self) -> None:
        try:
            await asyncio.to_thread(self._read)
        except MLOpsError as exc:
            logger.warning("model catalog: {}", exc)
        except ValueError as exc:  # a malformed aliases file: the store itself answers
            logger.warning("model catalog could not read the store: {}", exc)
        except OSError as exc:  # /ready says so; requests keep the schema already read
            if self.store_error is None:
                logger.warning("model catalog could not read the store: {}", exc)
            self.store_error = str(exc) or type(exc).__name__
            return
        self.store_error = None

    def start(self) -> None:
        async def loop() -> None:
            while True:
                await self.refresh()
                await asyncio.sleep(self.poll_seconds)

        self._task = asyncio.get_running_loop().create_task(loop(), name="model-catalog")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def call(self, fn, *args):
        """Run a blocking store operation in a thread, then refresh the snapshot."""
        result = await asyncio.to_thread(fn, *args)
        await self.refresh()
        return result


class ModelCatalogs:
    """Every model the gateway serves: the settings' models, and those found in the store."""

    def __init__(self, catalogs: dict[str, ModelCatalog], default: str, discover=None):
        self._catalogs = dict(catalogs)
        self.default_name = default
        self._discover = discover  # () -> {name: ModelCatalog} of the store's models
        self._tasks: list[asyncio.Task] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelCatalogs:
        def discover() -> dict[str, ModelCatalog]:
            store = open_store(settings)
            return {
                name: ModelCatalog(open_store(settings, name))
                for name in store.storage.list_models()
            }

        catalogs = {name: ModelCatalog(open_store(settings, name)) for name in settings.models}
        return cls(catalogs, settings.default_model, discover)

    @property
    def default(self) -> ModelCatalog:
        return self._catalogs[self.default_name]

    def names(self) -> list[str]:
        return sorted(self._catalogs)

    def get(self, name: str | None) -> ModelCatalog:
        """The catalog of ``name`` (None: the default model); 404 for a model not served."""
        catalog = self._catalogs.get(name or self.default_name)
        if catalog is None:
            raise ModelNotFound(
                f"unknown model {clip(str(name))!r}; models: {', '.join(self.names())}"
            )
        return catalog

    async def refresh(self) -> None:
        await asyncio.gather(*(c.refresh() for c in self._catalogs.values()))

    def start(self) -> None:
        for catalog in self._catalogs.values():
            catalog.start()
        if self._discover is not None:
            loop = asyncio.get_running_loop()
            self._tasks.append(loop.create_task(self._discovering(), name="model-discovery"))

    async def _discovering(self) -> None:
        while True:
            await asyncio.sleep(DISCOVER_SECONDS)
            try:
                found = await asyncio.to_thread(self._discover)
            except (OSError, MLOpsError) as exc:
                logger.warning("model discovery could not read the store: {}", exc)
                continue
            for name, catalog in found.items():
                if name not in self._catalogs:
                    logger.info("serving model {} found in the store", name)
                    self._catalogs[name] = catalog
                    await catalog.refresh()
                    catalog.start()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*(c.stop() for c in self._catalogs.values()))


DISCOVER_SECONDS = 5.0  # how often the store is listed for models registered meanwhile

__all__ = ["ModelCatalog", "ModelCatalogs", "NoProductionModel", "Production"]

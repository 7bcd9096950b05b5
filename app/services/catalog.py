"""What the gateway knows about models: the production version's feature schema, cached.

The store lives on the (shared) file system; reading it is blocking I/O, so it happens in a
thread, on a timer, never on a request's hot path. Requests read the cached snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from loguru import logger

from core.errors import IntegrityError, MLOpsError, NoProductionModel
from core.store import ModelMetadata, ModelStore


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
        except (OSError, ValueError) as exc:
            logger.warning("model catalog could not read the store: {}", exc)

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


__all__ = ["ModelCatalog", "NoProductionModel", "Production"]

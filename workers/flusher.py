"""The flusher: each worker node's main process moves the prediction logs and the feedback
labels from Redis to the store (core/datasets.py) every ``prediction_log.flush_seconds``,
and trims the logs' feedback indexes to what their caps kept (core/prediction_log.py). Every
``INDEX_SECONDS`` in between, it indexes what the workers logged since, for feedback (the
hot path does not: core/prediction_log.py).

One flush per model at a time across nodes (core/datasets.py FlushLock): the first node to
take a model's lock flushes it, the others skip it that round. After moving new labels, it
adds a point to the live-quality history of each version they judged and rewrites that
version's model card (its chart, training/cards.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import redis
from loguru import logger

from core.datasets import FlushLock, flush_labels, flush_predictions
from core.errors import MLOpsError
from core.feedback import window_key, window_pairs
from core.prediction_log import INDEX_SECONDS, index_new, trim_index
from core.quality import append_history, scores
from core.redis import sync_client
from core.settings import Settings
from core.store import ModelStore, open_store


class Flusher:
    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        store_of: Callable[[str], ModelStore] | None = None,
    ):
        self.settings = settings
        self.client = client
        self.store_of = store_of or (lambda model: open_store(settings, model))
        self.known: list[str] = []  # the models of the last flush, indexed in between

    def models(self) -> list[str]:
        """The settings' models and those found in the store (registered ones log too)."""
        found = set(self.settings.models)
        try:
            found |= set(self.store_of(self.settings.default_model).storage.list_models())
        except (OSError, MLOpsError) as exc:
            logger.warning("flusher could not list the store's models: {}", exc)
        return sorted(found)

    def flush(self, model: str) -> dict[str, int] | None:
        """Flush one model, if no one else is: how many entries and labels moved."""
        with FlushLock(self.client, model).held() as taken:
            if not taken:
                return None
            store = self.store_of(model)
            batch = self.settings.prediction_log_of(model).flush_batch
            predictions = flush_predictions(self.client, store, batch)
            index_new(self.client, model)
            trim_index(self.client, model)  # what the log's cap removed takes no feedback
            labels = flush_labels(self.client, store, batch)
            for version in sorted({entry["version"] for entry in labels}):
                self.record_quality(store, version)
        if predictions or labels:
            logger.bind(model=model).info(
                "flushed {} prediction(s) and {} label(s) of {} to the store",
                predictions,
                len(labels),
                model,
            )
        return {"predictions": predictions, "labels": len(labels)}

    def record_quality(self, store: ModelStore, version: int) -> None:
        """A point of ``version``'s live quality now, and its card redrawn with it."""
        raw = self.client.lrange(window_key(store.model_name, version), 0, -1)
        if not raw or version not in store.versions():
            return
        point = {"at": round(time.time(), 3), "labelled": len(raw), **scores(window_pairs(raw))}
        append_history(store, version, point)
        from training.cards import write_card

        try:
            write_card(store, version)
        except (OSError, MLOpsError) as exc:
            logger.warning(
                "could not redraw the card of {} v{}: {}", store.model_name, version, exc
            )

    def index(self) -> None:
        """Index the new log entries of the models of the last flush (one Redis call each
        when there is nothing new)."""
        for model in self.known:
            try:
                index_new(self.client, model)
            except redis.RedisError as exc:
                logger.warning("indexing the log of {} failed (tried again): {}", model, exc)

    def tick(self) -> None:
        self.known = self.models()
        for model in self.known:
            try:
                self.flush(model)
            except (redis.RedisError, OSError, MLOpsError) as exc:
                logger.warning("flushing {} failed (tried again next time): {}", model, exc)


def start_flusher(settings: Settings) -> threading.Thread:
    """The flusher's thread (a daemon) in the calling process, flushing every
    ``prediction_log.flush_seconds`` and indexing every ``INDEX_SECONDS``."""
    every = float(settings.prediction_log.flush_seconds)

    def loop() -> None:
        flusher = Flusher(settings, sync_client(settings.redis_url))
        flusher.known = flusher.models()
        due = time.monotonic() + every
        while True:
            time.sleep(min(INDEX_SECONDS, every))
            try:
                if time.monotonic() >= due:
                    due = time.monotonic() + every
                    flusher.tick()
                else:
                    flusher.index()
            except Exception as exc:  # never let the thread die: the log would fill its cap
                logger.exception("flusher: {}", exc)

    thread = threading.Thread(target=loop, name="log-flusher", daemon=True)
    thread.start()
    return thread

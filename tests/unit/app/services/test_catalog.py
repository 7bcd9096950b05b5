"""The gateway's model catalog validates requests against features that training signed."""

from __future__ import annotations

import asyncio
import json

from loguru import logger

from app.services.catalog import ModelCatalog
from core.settings import get_settings
from core.store import Aliases, open_store
from tests.factories import metadata


def test_features_from_metadata_that_fails_its_signature_are_not_used():
    store = open_store(get_settings())
    store.promote(store.register(b"v1", metadata(("a", "b"), name="iris")).version)
    v2 = store.register(b"v2", metadata(("a", "b"), name="iris")).version
    catalog = ModelCatalog(store)
    asyncio.run(catalog.refresh())
    assert catalog.require_production().feature_names == ("a", "b")

    # Someone who can write the store edits v2's features and points production at it.
    path = store.storage.root / "iris" / str(v2) / "metadata.json"
    edited = json.loads(path.read_text())
    edited["features"] = [{"name": "anything", "type": "float"}]
    path.write_text(json.dumps(edited))
    forged = Aliases(production=v2, history=[1]).model_dump_json().encode()
    store.storage.update_aliases("iris", lambda _raw: forged)
    messages: list[str] = []
    sink = logger.add(lambda m: messages.append(m.record["message"]), level="ERROR")
    try:
        asyncio.run(catalog.refresh())
        asyncio.run(catalog.refresh())
    finally:
        logger.remove(sink)
    production = catalog.require_production()
    assert production.version == 1 and production.feature_names == ("a", "b")
    assert len(messages) == 1 and "still validating against v1" in messages[0]

    store.promote(
        store.register(b"v3", metadata(("c",), name="iris")).version
    )  # a signed version: followed
    asyncio.run(catalog.refresh())
    assert catalog.require_production().feature_names == ("c",)

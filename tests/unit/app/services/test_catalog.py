"""The gateway's model catalog validates requests against features that training signed."""

from __future__ import annotations

import asyncio
import json

import pytest
from loguru import logger

from app.services import catalog as catalog_module
from app.services.catalog import ModelCatalog, ModelCatalogs
from core.errors import ModelNotFound
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


# -- many models -------------------------------------------------------------------------------
def test_catalogs_name_the_served_models_and_find_one_registered_meanwhile(monkeypatch):
    settings = get_settings()
    iris = open_store(settings)
    iris.promote(iris.register(b"i1", metadata(("a", "b"), name="iris")).version)
    monkeypatch.setattr(catalog_module, "DISCOVER_SECONDS", 0.01)

    async def scenario():
        catalogs = ModelCatalogs.from_settings(settings)
        await catalogs.refresh()
        catalogs.start()
        try:
            before = catalogs.names()
            with pytest.raises(ModelNotFound) as unknown:
                catalogs.get("penguins")
            # A model registered in the store (python -m training register) while serving.
            penguins = open_store(settings, "penguins")
            penguins.promote(penguins.register(b"p1", metadata(("c",), name="penguins")).version)
            for _ in range(500):
                if "penguins" in catalogs.names() and catalogs.get("penguins").production:
                    break
                await asyncio.sleep(0.01)
            return before, unknown.value, catalogs.names(), catalogs.get("penguins")
        finally:
            await catalogs.stop()

    before, unknown, after, penguins = asyncio.run(scenario())
    assert before == ["iris"]
    assert unknown.status_code == 404 and "'penguins'" in unknown.message
    assert "models: iris" in unknown.message
    assert after == ["iris", "penguins"]
    assert penguins.require_production().feature_names == ("c",)


def test_the_default_catalog_answers_for_no_name():
    catalogs = ModelCatalogs.from_settings(get_settings())
    assert catalogs.get(None) is catalogs.default
    assert catalogs.default.name == get_settings().default_model


def test_a_pinned_version_is_read_verified_and_an_unknown_one_is_not_found():
    store = open_store(get_settings())
    store.promote(store.register(b"v1", metadata(("a", "b"), name="iris")).version)
    v2 = store.register(b"v2", metadata(("x", "y"), name="iris")).version
    catalog = ModelCatalog(store)
    asyncio.run(catalog.refresh())
    pinned = asyncio.run(catalog.pinned(v2))
    assert (pinned.version, pinned.feature_names) == (v2, ("x", "y"))
    assert asyncio.run(catalog.pinned(v2)) is pinned  # read once
    with pytest.raises(ModelNotFound):
        asyncio.run(catalog.pinned(99))


def test_a_store_that_does_not_answer_is_reported_and_the_schema_read_is_kept():
    store = open_store(get_settings())
    store.promote(store.register(b"a", metadata()).version)
    catalog = ModelCatalog(store)
    asyncio.run(catalog.refresh())
    assert catalog.store_error is None and catalog.production.version == 1

    def away():
        raise ConnectionError("the model store s3://b does not answer")

    store.aliases_token = away
    asyncio.run(catalog.refresh())
    assert catalog.store_error == "the model store s3://b does not answer"
    assert catalog.production.version == 1
    del store.aliases_token
    asyncio.run(catalog.refresh())
    assert catalog.store_error is None

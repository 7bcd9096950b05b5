"""workers/model_cache.py: load once, follow the alias, refuse tampered versions, report each
switch."""

from __future__ import annotations

import pytest

from core.errors import IntegrityError, NoProductionModel
from core.settings import get_settings
from core.store import open_store
from tests.attacker import tamper
from tests.factories import SETOSA, Constant, stand_in_metadata
from training.pipeline import run_training
from training.serialization import load_model
from workers.inference import predict_jobs
from workers.model_cache import ModelCache


class CountingLoader:
    """The real loader (integrity and version checks), counting calls and failures."""

    def __init__(self, store, settings):
        self.store, self.settings = store, settings
        self.versions: list[int] = []
        self.refused: list[Exception] = []

    def __call__(self, version: int):
        self.versions.append(version)
        try:
            return load_model(self.store, version, self.settings)
        except Exception as exc:
            self.refused.append(exc)
            raise


@pytest.fixture
def store():
    return open_store(get_settings())


@pytest.fixture
def loader(store):
    return CountingLoader(store, get_settings())


@pytest.fixture
def cache(store, loader):
    return ModelCache(store, loader)


def train() -> int:
    return run_training(get_settings(), force=True).version


def artifact(store, version: int):
    return store.storage.root / store.model_name / str(version) / "model.joblib"


def test_no_production_model_raises(cache):
    with pytest.raises(NoProductionModel):
        cache.current()
    assert cache.served_version is None


def test_loads_once(cache, loader):
    train()
    first = cache.current()
    for _ in range(20):
        assert cache.current() is first
    assert loader.versions == [1]
    assert first.version == 1 and first.feature_names == [
        "sepal_length",
        "sepal_width",
        "petal_length",
        "petal_width",
    ]


def test_follows_alias_changes_and_keeps_recent_versions(cache, loader, store):
    train()
    assert cache.current().version == 1
    assert train() == 2  # same data, same score: the gate promotes it
    assert cache.current().version == 2
    store.rollback()
    assert cache.current().version == 1
    store.promote(2)
    assert cache.current().version == 2
    assert loader.versions == [1, 2]  # going back and forth needed no reload


def test_on_load_reports_each_new_version(cache):
    seen = []
    cache.on_load = lambda model: seen.append(model.version)
    train()
    cache.current()
    train()
    cache.current()
    cache.current()
    assert seen == [1, 2]


def test_refuses_tampered_version_and_keeps_serving_previous(cache, loader, store):
    train()
    assert cache.current().version == 1
    train()  # v2 promoted on disk ...
    tamper(artifact(store, 2))  # ... but its bytes changed before this worker loaded it
    assert store.production_version() == 2
    model = cache.current()
    assert model.version == 1
    assert cache.served_version == 1
    assert loader.versions == [1, 2]
    assert isinstance(loader.refused[0], IntegrityError)
    assert predict_jobs(model, [{"job_id": "a", "rows": [SETOSA]}])[0]["model_version"] == 1
    cache.current()
    assert loader.versions == [1, 2]  # refused once, not retried on every batch


def test_batch_keeps_the_version_it_started_with(cache):
    train()
    held = cache.current()
    train()
    assert cache.current().version == 2
    result = predict_jobs(held, [{"job_id": "a", "rows": [SETOSA, SETOSA]}])[0]
    assert result["status"] == "SUCCESS" and result["model_version"] == 1
    assert held.version == 1  # the object a batch holds never changes underneath it


def test_production_alias_removed_serves_nothing(cache, store):
    train()
    cache.current()
    store.storage.update_aliases(store.model_name, lambda _raw: b'{"production": null}')
    with pytest.raises(NoProductionModel):
        cache.current()


# -- what it reports (workers/metrics.py listens) -----------------------------------------------
class FakeStore:
    model_name = "iris"

    def __init__(self):
        self.production: int | None = 1
        self.token = 0

    def aliases_token(self):
        return self.token

    def production_version(self):
        return self.production


def test_model_cache_reports_every_switch_including_back_to_a_cached_version():
    store = FakeStore()
    cache = ModelCache(store, lambda version: (stand_in_metadata(), Constant()))
    loaded, served = [], []
    cache.on_load = lambda m: loaded.append(m.version)
    cache.on_serve = lambda name, m: served.append(m.version if m else None)
    cache.refresh()
    cache.refresh()  # nothing changed: no callback
    store.production, store.token = 2, 1
    cache.refresh()
    store.production, store.token = 1, 2  # rollback to a version still in memory
    cache.refresh()
    store.production, store.token = None, 3
    cache.refresh()
    assert loaded == [1, 2]
    assert served == [1, 2, 1, None]

"""The model store as the training pipeline and the loader use it, on both backends: real
files, and a real S3-compatible server (moto's, started by the fixtures)."""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from loguru import logger

from core.errors import AliasConflict, IntegrityError, ModelNotFound
from core.store import ModelStore
from tests.factories import metadata, s3_store, store_at


def register_one(root: str, payload: bytes) -> int:
    """Runs in a separate process: versions must not collide across processes either."""
    store = store_at(Path(root), "m")
    return store.register(payload, metadata()).version


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> ModelStore:
    if request.param == "local":
        return store_at(tmp_path / "store", "m")
    endpoint, bucket = request.getfixturevalue("s3_server"), request.getfixturevalue("s3_bucket")
    return s3_store(endpoint, f"s3://{bucket}/models", "m")


def test_training_store_versions_increase(store):
    assert store.versions() == []
    versions = [store.register(f"a{i}".encode(), metadata()).version for i in range(3)]
    assert versions == [1, 2, 3] == store.versions()
    meta = store.metadata(2)
    assert meta.version == 2 and len(meta.artifact_sha256) == 64
    assert store.read_artifact(2)[1] == b"a1"


def test_training_store_promote_and_rollback(store):
    for i in range(3):
        store.register(f"a{i}".encode(), metadata())
    assert store.production_version() is None
    store.promote(1)
    store.promote(3)
    assert store.aliases().production == 3 and store.aliases().history == [1]
    assert store.rollback().production == 1
    with pytest.raises(AliasConflict, match="no previous production"):
        store.rollback()
    assert store.production_version() == 1
    with pytest.raises(ModelNotFound):
        store.promote(42)
    assert store.production_version() == 1


def test_training_store_tamper_detected_before_unpickle(store, monkeypatch):
    from core.settings import get_settings
    from training import serialization

    version = store.register(b"original bytes", metadata()).version
    store.storage.write("m", version, "model.joblib", b"tampered bytes")
    calls = []
    monkeypatch.setattr(serialization.joblib, "load", lambda *a, **k: calls.append(a))
    with pytest.raises(IntegrityError, match="sha256"):
        serialization.load_model(store, version, get_settings())
    with pytest.raises(IntegrityError):
        store.promote(version)
    assert calls == []
    assert store.production_version() is None


def test_training_store_concurrent_registrations_threads(store):
    barrier = threading.Barrier(8)
    results: list[int] = []

    def worker(i: int) -> None:
        barrier.wait()
        results.append(store.register(f"t{i}".encode(), metadata()).version)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(1, 9))
    # every version holds the artifact its metadata describes
    assert len({store.read_artifact(v)[1] for v in results}) == 8


def test_training_store_concurrent_registrations_processes(tmp_path):
    root = str(tmp_path / "store")
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=4, mp_context=ctx) as pool:
        versions = list(pool.map(register_one, [root] * 4, [f"p{i}".encode() for i in range(4)]))
    assert sorted(versions) == [1, 2, 3, 4]


def test_promote_with_an_expected_production_is_a_compare_and_set(store):
    first = store.register(b"a", metadata()).version
    second = store.register(b"b", metadata()).version
    store.promote(first)
    with pytest.raises(AliasConflict, match="changed from none to v1"):
        store.promote(second, expected=None)
    assert store.production_version() == first
    store.promote(second, expected=first)
    assert store.production_version() == second


def test_promote_and_rollback_leave_an_audit_entry_and_line(store):
    first = store.register(b"a", metadata()).version
    second = store.register(b"b", metadata()).version
    lines = []
    handler = logger.add(lambda m: lines.append(m.record["message"]), level="INFO")
    try:
        store.promote(first, actor="cli (me@host)")
        store.promote(second, actor="api key abcd1234")
        store.rollback(actor="api key abcd1234")
    finally:
        logger.remove(handler)
    audit = store.metadata(first).audit
    assert [(a.action, a.by, a.detail) for a in audit] == [
        ("promoted", "cli (me@host)", "production none -> v1"),
        ("rolled back to", "api key abcd1234", "production v2 -> v1"),
    ]
    assert all(a.at for a in audit)
    assert [(a.action, a.detail) for a in store.metadata(second).audit] == [
        ("promoted", "production v1 -> v2")
    ]
    assert "audit: api key abcd1234 rolled back to m v1 (production v2 -> v1)" in lines

"""The S3 backend on a real S3-compatible server (moto's, started by the fixtures): what object
storage adds to the store contract of tests/unit/core/test_store.py (run on both backends)."""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor

import boto3
import pytest

from core.errors import AliasConflict
from core.object_store import S3Storage, StoreUnreachable, mask_url
from core.settings import SettingsError
from core.store import check_storage, open_store
from scripts.processes import free_port
from tests.factories import loaded_model, metadata, s3_store, settings_with


@pytest.fixture
def store(s3_server, s3_bucket, tmp_path):
    return s3_store(s3_server, f"s3://{s3_bucket}/models", "m", cache=tmp_path / "cache")


def test_a_version_is_listed_once_its_metadata_is_written(store):
    """A trainer that took v1 and died before its metadata leaves a gap, never half a version."""
    storage = store.storage
    assert storage._put(storage._key("m", 1, ".version"), b"crashed", IfNoneMatch="*")
    assert store.versions() == []
    assert store.register(b"a", metadata()).version == 2
    assert store.versions() == [2]


def test_a_taken_version_number_is_refused_to_a_second_writer(store):
    storage = store.storage
    key = storage._key("m", 7, ".version")
    assert storage._put(key, b"first", IfNoneMatch="*")
    assert not storage._put(key, b"second", IfNoneMatch="*")
    assert storage.fs.cat_file(f"{storage.bucket}/{key}") == b"first"


def test_aliases_compare_and_set_detects_a_writer_in_between(store):
    """Another promote lands between our read and our write: our If-Match PUT fails, the
    change is computed again from the winner's aliases, and the winner's change stays."""
    first = store.register(b"a", metadata()).version
    second = store.register(b"b", metadata()).version
    other = s3_store(store.storage.endpoint, store.storage.url, "m")
    seen = []

    def change(raw):
        seen.append(raw)
        if len(seen) == 1:
            other.promote(first)  # the racing writer
        return b'{"production": %d, "history": []}' % second

    store.storage.update_aliases("m", change)
    assert seen[0] is None and b'"production":1' in seen[1]
    assert store.production_version() == second


def test_a_promote_that_lost_the_race_is_refused_by_its_expected_version(store):
    first = store.register(b"a", metadata()).version
    second = store.register(b"b", metadata()).version
    other = s3_store(store.storage.endpoint, store.storage.url, "m")
    original, calls = store.storage.update_aliases, []

    def lose_the_race(model, change):  # the other writer lands just before our first write
        if not calls:
            calls.append(other.promote(first))
        return original(model, change)

    store.storage.update_aliases = lose_the_race
    with pytest.raises(AliasConflict, match="changed from none to v1"):
        store.promote(second, expected=None)
    assert other.production_version() == first


def test_the_aliases_token_is_the_etag_and_moves_with_the_alias(store):
    assert store.aliases_token() is None
    version = store.register(b"a", metadata()).version
    store.promote(version)
    token = store.aliases_token()
    assert token and token == store.aliases_token()
    store.promote(store.register(b"b", metadata()).version)
    assert store.aliases_token() != token


def test_the_aliases_token_is_asked_once_per_poll_interval_but_a_change_shows_at_once(store):
    """Workers ask before every batch: one HEAD per ``poll_seconds`` per process, and none
    stale after this process changed the alias itself."""
    store.storage.poll_seconds = 3600
    heads = []
    etag = store.storage._etag
    store.storage._etag = lambda model: heads.append(model) or etag(model)
    assert store.aliases_token() is None and store.aliases_token() is None
    assert len(heads) == 1
    store.promote(store.register(b"a", metadata()).version)
    assert store.aliases_token() is not None


def test_artifacts_are_read_from_the_digest_cache_once_downloaded(store):
    version = store.register(b"the artifact", metadata()).version
    downloads = []
    read = store.storage.read
    store.storage.read = lambda m, v, name: downloads.append(name) or read(m, v, name)
    assert store.read_artifact(version)[1] == b"the artifact"
    assert store.read_artifact(version)[1] == b"the artifact"
    assert downloads.count("model.joblib") == 1
    sha = store.metadata(version).artifact_sha256
    (store.cache.root / sha).write_bytes(b"tampered on the worker's disk")
    assert store.read_artifact(version)[1] == b"the artifact"  # refused, downloaded again
    assert downloads.count("model.joblib") == 2
    assert (store.cache.root / sha).read_bytes() == b"the artifact"


def test_a_vanished_bucket_is_reported_not_taken_for_no_production(store, s3_server):
    store.promote(store.register(b"a", metadata()).version)
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    bucket = store.storage.bucket
    for item in s3.list_objects_v2(Bucket=bucket)["Contents"]:
        s3.delete_object(Bucket=bucket, Key=item["Key"])
    s3.delete_bucket(Bucket=bucket)
    with pytest.raises(StoreUnreachable, match=bucket):
        store.aliases_token()
    with pytest.raises(StoreUnreachable):
        store.storage.check()


def test_a_worker_keeps_serving_its_model_when_the_store_is_away():
    from workers.model_cache import ModelCache

    class Away:
        model_name = "m"

        def aliases_token(self):
            raise StoreUnreachable("the model store s3://b does not answer")

    cache = ModelCache(Away(), loader=None)
    with pytest.raises(StoreUnreachable):  # nothing held yet: say why
        cache.current()
    cache._current, cache._current_version = loaded_model(3, name="m"), 3
    assert cache.current().version == 3


def test_an_unreachable_store_stops_start_up_naming_the_url_not_the_secret(monkeypatch):
    endpoint = f"http://127.0.0.1:{free_port()}"
    settings = settings_with(
        monkeypatch,
        ARTIFACTS_URL="s3://models/prod",
        OBJECT_STORE__ENDPOINT_URL=endpoint,
        OBJECT_STORE__ACCESS_KEY_ID="minio",
        OBJECT_STORE__SECRET_ACCESS_KEY="s3cr3t-value",
    )
    with pytest.raises(SettingsError) as caught:
        check_storage(settings)
    message = str(caught.value)
    assert f"the model store s3://models/prod at {endpoint} does not answer" in message
    assert "s3cr3t-value" not in message


def test_credentials_in_the_endpoint_url_are_refused_without_echoing_them(monkeypatch):
    with pytest.raises(SettingsError, match=r"object_store\.endpoint_url") as caught:
        settings_with(monkeypatch, OBJECT_STORE__ENDPOINT_URL="http://minio:s3cr3t@minio:9000")
    assert "s3cr3t" not in str(caught.value) and "minio:***@minio:9000" in str(caught.value)


@pytest.mark.parametrize("url", ["gs://bucket/models", "http://host/x", "s3://", "s3://B_/x"])
def test_an_unknown_or_malformed_store_url_is_refused_by_settings(monkeypatch, url):
    with pytest.raises(SettingsError, match="artifacts_url"):
        settings_with(monkeypatch, ARTIFACTS_URL=url)


def test_the_artifacts_url_picks_the_backend(monkeypatch, tmp_path):
    settings = settings_with(monkeypatch, ARTIFACTS_URL="s3://models/prod")
    storage = open_store(settings).storage
    assert isinstance(storage, S3Storage)
    assert (storage.bucket, storage.prefix) == ("models", "prod")
    settings = settings_with(monkeypatch, ARTIFACTS_URL=str(tmp_path / "here"))
    assert open_store(settings).storage.root == tmp_path / "here"


def test_mask_url():
    assert mask_url("http://u:p@h:9000/x") == "http://u:***@h:9000/x"
    assert mask_url("https://h/x") == "https://h/x"


def register_on_s3(endpoint: str, url: str, payload: bytes) -> int:
    """Runs in another process: a trainer of its own, with its own S3 client."""
    return s3_store(endpoint, url, "m").register(payload, metadata()).version


def test_trainers_in_several_processes_get_different_versions(store):
    ctx = multiprocessing.get_context("fork")
    args = [store.storage.endpoint] * 4, [store.storage.url] * 4, [b"p%d" % i for i in range(4)]
    with ProcessPoolExecutor(max_workers=4, mp_context=ctx) as pool:
        versions = list(pool.map(register_on_s3, *args))
    assert sorted(versions) == [1, 2, 3, 4] == store.versions()


def test_of_promotes_racing_on_the_same_expected_production_exactly_one_wins(store):
    """Eight writers, each with its own client, promote their version "if production is still
    none": the conditional PUTs let exactly one through, the others see it and refuse."""
    versions = [store.register(b"v%d" % i, metadata()).version for i in range(8)]
    writers = [s3_store(store.storage.endpoint, store.storage.url, "m") for _ in versions]
    barrier, won, refused = threading.Barrier(len(versions)), [], []

    def promote(writer, version):
        barrier.wait()
        try:
            writer.promote(version, expected=None)
            won.append(version)
        except AliasConflict:
            refused.append(version)

    pairs = zip(writers, versions, strict=True)
    threads = [threading.Thread(target=promote, args=pair) for pair in pairs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1 and len(refused) == 7
    assert store.aliases().production == won[0] and store.aliases().history == []

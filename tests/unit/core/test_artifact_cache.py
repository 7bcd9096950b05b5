"""The local cache of downloaded artifacts, by sha256."""

from __future__ import annotations

import hashlib

import pytest

from core.artifact_cache import ArtifactCache


def test_a_file_is_used_only_while_it_hashes_to_its_name(tmp_path):
    cache = ArtifactCache(tmp_path / "cache")
    data = b"fitted pipeline bytes"
    sha = hashlib.sha256(data).hexdigest()
    assert cache.get(sha) is None
    cache.put(sha, data)
    assert cache.get(sha) == data
    (tmp_path / "cache" / sha).write_bytes(b"changed on disk")
    assert cache.get(sha) is None
    assert not (tmp_path / "cache" / sha).exists()


def test_only_a_sha256_names_a_file(tmp_path):
    with pytest.raises(ValueError, match="not a sha256"):
        ArtifactCache(tmp_path).get("../../etc/passwd")


def test_a_cache_that_cannot_be_written_is_skipped(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    cache = ArtifactCache(tmp_path / "file" / "cache")
    cache.put("0" * 64, b"x")  # logged, not raised: the bytes are downloaded again next time
    assert cache.get("0" * 64) is None

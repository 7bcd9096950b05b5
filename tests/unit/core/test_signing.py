"""Signed model versions (core/signing.py, core/store.py): whoever can write the store cannot
make a reader load bytes, or a format, that the training key did not sign."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization as pem
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.errors import IncompatibleArtifact, IntegrityError, SigningKeyMissing
from core.settings import SettingsError, get_settings, reset_settings
from core.signing import InvalidKey, SigningKeys, key_id, parse_private_key, parse_public_key
from core.store import GateDecision, ModelStore
from core.store import sha256_hex as sha256
from tests import attacker
from tests.attacker import code_running_pickle
from tests.factories import metadata, store_at
from training import serialization


@pytest.fixture
def keys() -> SigningKeys:
    return SigningKeys.generate()


@pytest.fixture
def store(tmp_path, keys) -> ModelStore:
    return store_at(tmp_path / "store", "m", keys=keys)


def folder(store: ModelStore, version: int) -> Path:
    return Path(store.storage.root) / "m" / str(version)


def edit_metadata(store: ModelStore, number: int, **fields) -> None:
    """What an attacker with write access does: rewrite metadata.json, keeping the rest."""
    attacker.edit_metadata(folder(store, number), **fields)


# -- what training registers ------------------------------------------------------------------
def test_register_signs_the_version_with_the_training_key(store, keys):
    meta = store.register(b"model bytes", metadata())
    assert meta.signature is not None
    assert meta.signature.key_id == keys.signing_key_id
    assert store.read_artifact(meta.version) == (meta, b"model bytes")


def test_a_verify_only_store_cannot_register(tmp_path, keys):
    verify_only = SigningKeys(public_keys=[parse_public_key(keys.public_text())])
    with pytest.raises(SigningKeyMissing, match=r"signing\.private_key"):
        store_at(tmp_path, "m", keys=verify_only).register(b"bytes", metadata())
    assert store_at(tmp_path, "m", keys=verify_only).versions() == []


def test_gate_decisions_and_notes_change_without_breaking_the_signature(store):
    version = store.register(b"bytes", metadata()).version
    gate = GateDecision(decision="promoted", reason="first", metric="accuracy", candidate=0.9)
    store.update_metadata(version, gate=gate, note="reviewed")
    assert store.verify(version).gate == gate
    with pytest.raises(ValueError, match="artifact_sha256"):
        store.update_metadata(version, artifact_sha256=sha256(b"other"))


# -- what someone who can write the store can try ---------------------------------------------
def test_tampered_artifact_bytes_are_refused(store):
    version = store.register(b"model bytes", metadata()).version
    (folder(store, version) / "model.joblib").write_bytes(b"other bytes")
    with pytest.raises(IntegrityError, match="does not match its signed sha256"):
        store.read_artifact(version)


def test_artifact_and_its_sha256_rewritten_together_never_load(store, tmp_path):
    """Before signing, this passed: the sha256 beside the artifact was all that was checked."""
    version = store.register(b"model bytes", metadata()).version
    marker = tmp_path / "code-ran"
    attacker.replace_artifact(folder(store, version), code_running_pickle(marker))
    with pytest.raises(IntegrityError, match="signature does not match"):
        serialization.load_model(store, version, get_settings())
    with pytest.raises(IntegrityError):
        store.promote(version)
    assert not marker.exists()
    assert store.production_version() is None


@pytest.mark.parametrize(
    "change",
    [
        {"artifact_format": "skops"},
        {"artifact_file": "model.skops"},
        {"features": [{"name": "b", "type": "float"}, {"name": "a", "type": "float"}]},
        {"classes": ["y", "x"]},
        {"sklearn_version": "1.1"},
        {"name": "other"},
        {"version": 2},
    ],
    ids=lambda change: next(iter(change)),
)
def test_every_signed_field_edited_is_refused(store, change):
    version = store.register(b"model bytes", metadata()).version
    edit_metadata(store, version, **change)
    with pytest.raises(IntegrityError, match="signature does not match"):
        store.verify(version)


def test_metadata_that_is_not_plain_json_is_refused_not_a_crash(store):
    version = store.register(b"model bytes", metadata()).version
    path = folder(store, version) / "metadata.json"
    path.write_text(path.read_text().replace('"classes": [', '"classes": [NaN, '))
    with pytest.raises(IntegrityError, match="not plain JSON"):
        store.verify(version)


def test_a_signed_version_copied_under_another_number_is_refused(store):
    store.register(b"model bytes", metadata())
    shutil.copytree(folder(store, 1), folder(store, 7))
    with pytest.raises(IntegrityError, match="signed for m v1"):
        store.verify(7)
    with pytest.raises(IntegrityError):
        store.promote(7)


def test_an_unsigned_version_is_refused_and_named_so(store):
    version = store.register(b"model bytes", metadata()).version
    edit_metadata(store, version, signature=None)
    with pytest.raises(IntegrityError, match=r"m v1 is not signed.*python -m training sign"):
        store.verify(version)


def test_a_version_signed_by_an_unknown_key_is_refused(tmp_path, store, keys):
    other = store_at(tmp_path / "store", "m", keys=SigningKeys.generate())
    version = other.register(b"model bytes", metadata()).version  # same folder, another key
    with pytest.raises(IntegrityError, match="not trusted here") as refused:
        store.verify(version)
    assert keys.signing_key_id in str(refused.value)  # the trusted key ids are listed


def test_rollback_skips_versions_that_do_not_verify(store):
    for payload in (b"v1", b"v2", b"v3"):
        store.register(payload, metadata())
    for version in (1, 2, 3):
        store.promote(version)
    edit_metadata(store, 2, signature=None)
    assert store.rollback().production == 1


# -- the format comes from settings, never from the store --------------------------------------
def test_a_format_switch_in_metadata_is_refused_on_a_skops_deployment(tmp_path, keys):
    store = store_at(tmp_path / "store", "m", "skops", keys=keys)
    version = store.register(b"skops bytes", metadata(fmt="skops")).version
    marker = tmp_path / "code-ran"
    attacker.replace_artifact(folder(store, version), code_running_pickle(marker), "joblib")
    with pytest.raises(IntegrityError):
        store.verify(version)
    assert not marker.exists()


def test_even_a_validly_signed_joblib_version_is_not_loaded_by_a_skops_deployment(
    tmp_path, keys, monkeypatch
):
    """What a leaked key can do to a skops deployment: not run code through a pickle."""
    monkeypatch.setenv("MLOPS_TRAINING__ARTIFACT_FORMAT", "skops")
    reset_settings()
    marker = tmp_path / "code-ran"
    signer = store_at(tmp_path / "store", "m", "joblib", keys=keys)
    version = signer.register(code_running_pickle(marker), metadata(fmt="joblib")).version
    skops_store = store_at(tmp_path / "store", "m", "skops", keys=keys)
    with pytest.raises(IncompatibleArtifact, match="loads skops only"):
        serialization.load_model(skops_store, version, get_settings())
    with pytest.raises(IncompatibleArtifact):
        skops_store.promote(version)
    assert not marker.exists()


def test_the_loader_refuses_a_store_opened_for_another_format(tmp_path, keys):
    store = store_at(tmp_path / "store", "m", "skops", keys=keys)  # settings say joblib
    with pytest.raises(IncompatibleArtifact, match="settings say joblib"):
        serialization.load_model(store, 1, get_settings())


# -- keys: formats, rotation, settings --------------------------------------------------------
def pem_private(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        pem.Encoding.PEM,
        pem.PrivateFormat.PKCS8,
        pem.NoEncryption(),
    ).decode()


def pem_public(key: Ed25519PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(pem.Encoding.PEM, pem.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def test_keys_parse_from_base64_and_pem_alike(keys):
    private = parse_private_key(keys.private_text())
    assert key_id(parse_private_key(pem_private(private)).public_key()) == keys.signing_key_id
    assert key_id(parse_public_key(keys.public_text())) == keys.signing_key_id
    assert key_id(parse_public_key(pem_public(private))) == keys.signing_key_id


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not a key!", "neither PEM nor base64"),
        ("c2hvcnQ=", "5 bytes once base64-decoded"),
        ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "PEM"),
    ],
)
def test_a_key_that_does_not_parse_is_named(text, message):
    with pytest.raises(InvalidKey, match=message) as refused:
        parse_private_key(text)
    assert "signing.private_key" in str(refused.value)


def test_rotation_old_versions_verify_while_the_old_public_key_is_listed(tmp_path):
    old, new = SigningKeys.generate(), SigningKeys.generate()
    root = tmp_path / "store"
    v1 = store_at(root, "m", keys=old).register(b"v1", metadata()).version
    old_public = parse_public_key(old.public_text())
    rotated = SigningKeys(parse_private_key(new.private_text()), [old_public])
    v2 = store_at(root, "m", keys=rotated).register(b"v2", metadata()).version
    readers = SigningKeys(public_keys=[old_public, parse_public_key(new.public_text())])
    assert store_at(root, "m", keys=readers).verify(v1) and store_at(
        root, "m", keys=readers
    ).verify(v2)
    # Re-sign the old versions with the new key, then the old key can go.
    assert store_at(root, "m", keys=rotated).sign(v1).signature.key_id == new.signing_key_id
    new_only = SigningKeys(public_keys=[parse_public_key(new.public_text())])
    assert store_at(root, "m", keys=new_only).verify(v1) and store_at(
        root, "m", keys=new_only
    ).verify(v2)


def test_sign_refuses_a_version_whose_bytes_do_not_match(store):
    version = store.register(b"model bytes", metadata()).version
    (folder(store, version) / "model.joblib").write_bytes(b"other bytes")
    with pytest.raises(IntegrityError, match="not signing it"):
        store.sign(version)


def test_production_stops_without_a_key_to_verify_with(monkeypatch):
    monkeypatch.setenv("MLOPS_ENV", "production")
    monkeypatch.setenv("MLOPS_SIGNING__PRIVATE_KEY", "")
    monkeypatch.setenv("MLOPS_SIGNING__PUBLIC_KEYS", "[]")
    reset_settings()
    with pytest.raises(SettingsError, match=r"signing\.public_keys is empty"):
        get_settings()


def test_production_runs_with_public_keys_only(monkeypatch, keys):
    monkeypatch.setenv("MLOPS_ENV", "production")
    monkeypatch.setenv("MLOPS_SIGNING__PRIVATE_KEY", "")
    monkeypatch.setenv("MLOPS_SIGNING__PUBLIC_KEYS", json.dumps([keys.public_text()]))
    reset_settings()
    loaded = SigningKeys.from_settings(get_settings())
    assert loaded.key_ids == [keys.signing_key_id] and not loaded.can_sign


def test_a_bad_key_stops_start_up_naming_it(monkeypatch):
    monkeypatch.setenv("MLOPS_SIGNING__PUBLIC_KEYS", '["AAAA", "garbage!"]')
    reset_settings()
    with pytest.raises(SettingsError, match=r"signing\.public_keys\[0\]"):
        get_settings()


def test_development_runs_without_keys_and_refuses_every_version(monkeypatch, tmp_path):
    monkeypatch.setenv("MLOPS_ENV", "development")
    monkeypatch.setenv("MLOPS_SIGNING__PRIVATE_KEY", "")
    monkeypatch.setenv("MLOPS_SIGNING__PUBLIC_KEYS", "[]")
    monkeypatch.setattr("core.settings.DEV_SECRETS", tmp_path / "none.toml")
    reset_settings()
    keys = SigningKeys.from_settings(get_settings())
    assert not keys.can_sign and not keys.can_verify
    signed = store_at(tmp_path / "store", "m", keys=SigningKeys.generate()).register(
        b"b", metadata()
    )
    with pytest.raises(IntegrityError, match=r"none: set signing\.public_keys"):
        store_at(tmp_path / "store", "m", keys=keys).verify(signed.version)

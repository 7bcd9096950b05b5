"""KeyRing: plain and sha256 keys, scopes, admin implies predict, auth disabled."""

from __future__ import annotations

import hashlib

import pytest

from app.auth import ANONYMOUS, KeyRing
from app.errors import AuthError, Forbidden


def sha256(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing(
        {
            "plain-predict": ["predict"],
            sha256("hashed-predict"): ["predict"],
            "plain-admin": ["admin"],
            sha256("hashed-admin"): "admin",
        }
    )


@pytest.mark.parametrize("key", ["plain-predict", "hashed-predict"])
def test_predict_keys_allow_predict_only(ring, key):
    principal = ring.authorize(key, "predict")
    assert principal.scopes == {"predict"}
    with pytest.raises(Forbidden) as info:
        ring.authorize(key, "admin")
    assert info.value.status_code == 403
    assert "'admin'" in info.value.message


@pytest.mark.parametrize("key", ["plain-admin", "hashed-admin"])
def test_admin_keys_imply_predict(ring, key):
    assert ring.authorize(key, "admin").scopes == {"admin"}
    assert ring.authorize(key, "predict").allows("predict")


def test_a_plain_key_and_its_hash_are_the_same_principal():
    plain = KeyRing({"k": ["predict"]}).authenticate("k")
    hashed = KeyRing({sha256("k"): ["predict"]}).authenticate("k")
    assert plain == hashed
    assert plain.fingerprint == hashlib.sha256(b"k").hexdigest()[:8]
    assert plain.fingerprint != "k"  # never the key itself


@pytest.mark.parametrize("key", [None, ""])
def test_missing_key_is_401_saying_where_to_send_it(ring, key):
    with pytest.raises(AuthError) as info:
        ring.authorize(key, "predict")
    assert info.value.status_code == 401
    assert "X-API-Key" in info.value.message


@pytest.mark.parametrize("key", ["wrong", "plain-predict ", sha256("plain-predict"), "PLAIN-ADMIN"])
def test_unknown_key_is_401(ring, key):
    with pytest.raises(AuthError, match="invalid API key"):
        ring.authenticate(key)


def test_the_hash_itself_is_not_a_key():
    ring = KeyRing({sha256("secret"): ["admin"]})
    with pytest.raises(AuthError):
        ring.authenticate(sha256("secret").removeprefix("sha256:"))


def test_disabled_ring_lets_everyone_in_with_every_scope():
    ring = KeyRing({"k": ["predict"]}, enabled=False)
    assert ring.authorize(None, "admin") is ANONYMOUS
    assert ring.authorize("anything", "predict") is ANONYMOUS


def test_empty_ring_refuses_every_key():
    ring = KeyRing({})
    assert len(ring) == 0
    with pytest.raises(AuthError):
        ring.authenticate("k")


def test_unknown_scope_is_a_configuration_error():
    with pytest.raises(ValueError, match="unknown scope"):
        KeyRing({"k": ["predict", "root"]})


def test_knows_any_valid_key_whatever_its_scope(ring):
    assert ring.knows("plain-predict") and ring.knows("hashed-admin")
    assert not ring.knows("nope")
    assert not ring.knows(None)
    assert KeyRing({}, enabled=False).knows(None)  # auth disabled: everyone is known

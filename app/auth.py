"""API keys with scopes, from settings (``auth.api_keys``: key -> scopes).

A key may be given in plain text or as ``sha256:<hex>``. Incoming keys are hashed and compared
with every configured hash in constant time; keys are never logged (a short fingerprint is).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from app.errors import AuthError, Forbidden

SCOPES = ("predict", "admin")


@dataclass(frozen=True)
class Principal:
    """An authenticated API key: ``fingerprint`` (8 hex) for logs, ``owner`` (32 hex of the
    key's sha256) for the jobs it creates and the idempotency keys it uses."""

    fingerprint: str
    scopes: frozenset[str]
    owner: str = ""

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    def may_read(self, owner: str | None) -> bool:
        """A job is read by the key that created it, and by ``admin`` keys."""
        return "admin" in self.scopes or (owner is not None and owner == self.owner)


ANONYMOUS = Principal("auth-disabled", frozenset(SCOPES), "auth-disabled")


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class KeyRing:
    def __init__(self, api_keys: dict, enabled: bool = True):
        self.enabled = enabled
        self._entries: list[tuple[bytes, frozenset[str]]] = []
        for key, scopes in api_keys.items():
            key = str(key)
            if key.startswith("sha256:"):
                digest = bytes.fromhex(key.removeprefix("sha256:"))
            else:
                digest = _digest(key)
            scope_set = frozenset([scopes] if isinstance(scopes, str) else scopes)
            unknown = scope_set - set(SCOPES)
            if unknown:
                raise ValueError(f"auth.api_keys: unknown scope(s) {sorted(unknown)}")
            self._entries.append((digest, scope_set))

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, key: str | None) -> Principal:
        if not self.enabled:
            return ANONYMOUS
        if not key:
            raise AuthError("missing API key: send it in the X-API-Key header")
        digest = _digest(key)
        found: frozenset[str] | None = None
        for known, scopes in self._entries:  # no early exit: time does not depend on the match
            if hmac.compare_digest(digest, known):
                found = scopes
        if found is None:
            raise AuthError("invalid API key")
        hexdigest = digest.hex()
        return Principal(hexdigest[:8], found, hexdigest[:32])

    def knows(self, key: str | None) -> bool:
        """A valid key, of any scope (told more than anonymous callers are)."""
        try:
            self.authenticate(key)
        except AuthError:
            return False
        return True

    def authorize(self, key: str | None, scope: str) -> Principal:
        principal = self.authenticate(key)
        if not principal.allows(scope):
            raise Forbidden(f"this API key lacks the {scope!r} scope")
        return principal

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
    fingerprint: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes


ANONYMOUS = Principal("auth-disabled", frozenset(SCOPES))


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
        return Principal(digest.hex()[:8], found)

    def authorize(self, key: str | None, scope: str) -> Principal:
        principal = self.authenticate(key)
        if not principal.allows(scope):
            raise Forbidden(f"this API key lacks the {scope!r} scope")
        return principal

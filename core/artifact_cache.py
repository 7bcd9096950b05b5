"""Artifacts downloaded from the object store, kept on local disk by their sha256.

The digest comes from a version's verified, signed metadata, so a file here is only used when
its bytes hash to it: a worker following the alias back to a version it already downloaded
(a rollback), reloading a version its memory pool evicted, or starting again (a new pool
child) reads the disk instead of the bucket. Nothing is evicted: one file per version served.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import uuid
from pathlib import Path

from loguru import logger


class ArtifactCache:
    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, sha256: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self.root / sha256

    def get(self, sha256: str) -> bytes | None:
        """The bytes, if a file here hashes to ``sha256`` (a bad one is removed)."""
        path = self._path(sha256)
        try:
            data = path.read_bytes()
        except OSError:  # not there, or no usable cache folder: download it
            return None
        if hashlib.sha256(data).hexdigest() != sha256:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return None
        return data

    def put(self, sha256: str, data: bytes) -> None:
        """Keep ``data`` (already checked against ``sha256``); best effort, atomic."""
        path = self._path(sha256)
        tmp = path.with_name(f".{sha256}.{uuid.uuid4().hex}.tmp")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError as exc:  # a full or read-only disk: download again next time
            logger.warning("could not keep artifact {} in {}: {}", sha256[:12], self.root, exc)
            with contextlib.suppress(OSError):
                tmp.unlink()

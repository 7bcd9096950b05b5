"""What someone who can write the artifacts folder (and nothing else) can do to a version."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import joblib


class MakesDirOnLoad:
    """Pickles as a call to ``os.mkdir(path)``: loading it runs code, visibly and harmlessly."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def code_running_pickle(marker: Path) -> bytes:
    """joblib bytes that create the folder ``marker`` when loaded (no import of this module)."""
    buffer = io.BytesIO()
    joblib.dump(MakesDirOnLoad(marker), buffer)
    return buffer.getvalue()


def tamper(artifact: Path) -> None:
    """Flip one byte in the middle of a file: same size, other bytes."""
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))


def edit_metadata(version_dir: Path, **fields) -> None:
    path = version_dir / "metadata.json"
    meta = json.loads(path.read_text())
    meta.update(fields)
    path.write_text(json.dumps(meta))


def replace_artifact(version_dir: Path, payload: bytes, fmt: str = "joblib") -> None:
    """Write ``payload`` as the artifact and make metadata agree: file, format and sha256."""
    (version_dir / f"model.{fmt}").write_bytes(payload)
    edit_metadata(
        version_dir,
        artifact_file=f"model.{fmt}",
        artifact_format=fmt,
        artifact_sha256=hashlib.sha256(payload).hexdigest(),
    )

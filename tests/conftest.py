"""Shared fixtures: every test runs in the `testing` environment with its own artifacts folder,
and with a signing key pair made for this test session only (no key is ever committed)."""

from __future__ import annotations

import json
import threading

import pytest

from core.settings import reset_settings
from core.signing import SigningKeys


@pytest.fixture(scope="session", autouse=True)
def signing_keys():
    """Training signs with this session's private key, everything verifies with its public key;
    subprocesses get both through MLOPS_SIGNING__* (tests/factories.py signing_env)."""
    keys = SigningKeys.generate()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLOPS_SIGNING__PRIVATE_KEY", keys.private_text())
        patch.setenv("MLOPS_SIGNING__PUBLIC_KEYS", json.dumps([keys.public_text()]))
        reset_settings()  # settings cached while collecting (module imports) lack the keys
        yield keys
    reset_settings()


@pytest.fixture(autouse=True)
def testing_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MLOPS_ENV", "testing")
    monkeypatch.setenv("MLOPS_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    reset_settings()
    yield
    reset_settings()


@pytest.fixture(scope="session")
def s3_server():
    """A local S3-compatible server (tests/s3_server.py) on a free loopback port, for this test
    session; its endpoint URL."""
    from scripts.processes import free_port
    from tests.s3_server import make_s3_server

    port = free_port()
    server = make_s3_server("127.0.0.1", port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    with pytest.MonkeyPatch.context() as patch:  # moto accepts any credentials
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        yield f"http://127.0.0.1:{port}"
    server.shutdown()
    thread.join()


@pytest.fixture
def s3_bucket(s3_server, request):
    """A new, empty bucket on the test server; its name."""
    import re
    import uuid

    import boto3

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    bucket = f"{name}-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    return bucket

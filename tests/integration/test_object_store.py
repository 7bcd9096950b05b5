"""The service on an S3-compatible model store (moto's server, started by the fixtures): each
part has its own artifacts folder that nobody else sees, so workers get models only from the
bucket. Train, serve, retrain, promote, roll back; then the bucket vanishes."""

from __future__ import annotations

import subprocess
import sys
import time

import boto3
import httpx
import pytest

from scripts import commands
from scripts.processes import ROOT, free_port, wait_until
from tests.factories import s3_env
from tests.integration.stack import SEED_BODY, Stack, poll_job, running

pytestmark = pytest.mark.integration


def own(stack: Stack, part: str) -> dict[str, str]:
    """A part's own folders: an artifacts folder it must never need, its artifact cache."""
    return {
        "MLOPS_ARTIFACTS_DIR": str(stack.workdir / part / "artifacts"),
        "MLOPS_OBJECT_STORE__CACHE_DIR": str(stack.workdir / part / "cache"),
    }


def served(stack: Stack) -> set:
    with stack.client() as client:
        return {w["model_version"] for w in client.get("/models").json()["workers"]}


def predict_version(stack: Stack) -> int:
    with stack.client() as client:
        response = client.post("/predict?wait=10", json=SEED_BODY)
    assert response.status_code == 200 and response.json()["status"] == "SUCCESS", response.text
    return response.json()["model_version"]


def test_train_serve_retrain_promote_from_the_bucket_then_the_bucket_vanishes(
    tmp_path, s3_server, s3_bucket
):
    stack = Stack(tmp_path, **s3_env(s3_server, s3_bucket))

    def start(stack: Stack) -> None:
        stack.start_redis()
        result = stack.train(**own(stack, "cli"))
        assert result.returncode == 0, result.stderr
        stack.start_worker("worker0", **own(stack, "worker0"))
        stack.start_gateway(**own(stack, "gateway"))
        stack.wait_ready()

    with running(stack, start):
        assert predict_version(stack) == 1
        with stack.admin() as admin:
            job = admin.post("/retrain", params={"force": "true"}).json()["job_id"]
            assert poll_job(admin, job, timeout=120)["status"] == "SUCCESS"
            assert admin.post("/models/2/promote").status_code == 200
            wait_until(lambda: served(stack) == {2}, 30, "the worker on v2")
            assert predict_version(stack) == 2
            assert admin.post("/models/rollback").status_code == 200
            wait_until(lambda: served(stack) == {1}, 30, "the worker back on v1")
        assert predict_version(stack) == 1

        s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"]]
        assert {"models/iris/aliases.json", "models/iris/2/metadata.json"} <= set(keys)
        # Nobody used a shared folder; the worker keeps the two versions it loaded, by digest.
        assert not any((tmp_path / part / "artifacts").exists() for part in ("cli", "worker0"))
        assert not (tmp_path / "gateway" / "artifacts").exists()
        assert not stack.artifacts.exists()
        assert len(list((tmp_path / "worker0" / "cache").glob("[0-9a-f]" * 8 + "*"))) == 2

        for key in keys:
            s3.delete_object(Bucket=s3_bucket, Key=key)
        s3.delete_bucket(Bucket=s3_bucket)

        def not_ready() -> bool:
            response = httpx.get(f"{stack.url}/ready", timeout=5)
            body = response.json()
            return response.status_code == 503 and any(
                "model store" in reason for reason in body["reasons"]
            )

        wait_until(not_ready, 30, "/ready saying the store is gone")
        time.sleep(1)  # a few alias polls against the missing bucket
        assert predict_version(stack) == 1  # the worker keeps serving what it holds


@pytest.mark.parametrize("part", ["gateway", "worker", "training"])
def test_an_unreachable_store_stops_the_part_at_start_up_naming_the_url(tmp_path, part):
    stack = Stack(tmp_path, **s3_env(f"http://127.0.0.1:{free_port()}", "models"))
    with running(stack, Stack.start_redis):
        args = {
            "gateway": commands.gateway("127.0.0.1", free_port()),
            "worker": commands.worker(None, 1),
            "training": [sys.executable, "-m", "training", "train"],
        }[part]
        result = subprocess.run(
            args, cwd=ROOT, env=stack.env(), capture_output=True, text=True, timeout=90
        )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "the model store s3://models/models at http://127.0.0.1:" in output, output[-3000:]
    assert "does not answer" in output
    assert "ready" not in output.lower().split("does not answer")[-1]

from __future__ import annotations

import pytest

from tests.integration.stack import SEED_BODY, poll_job

pytestmark = pytest.mark.integration


def test_seed_body_async_then_poll(stack):
    with stack.client() as client:
        response = client.post("/predict", json=SEED_BODY)
        assert response.status_code == 202, response.text
        assert response.headers["location"] == f"/jobs/{response.json()['job_id']}"
        result = poll_job(client, response.json()["job_id"])
    assert result["status"] == "SUCCESS"
    assert result["predictions"] == ["setosa"]
    assert result["model_version"] == 1
    assert result["api_version"] == "0.1.0"
    assert result["request_id"] == "integration-test-id"

"""A predict message sent alone runs in the worker's main process (workers/pool.py).

Real redis-server, worker and gateway, the faulty model of tests/integration/faulty_model.py in
production. A sync request with nothing else in flight is served by the worker's main process;
at home a stuck prediction still meets the hard time limit (the node restarts in place), and a
model that kills its process still ends its job (the redelivery runs in a pool process).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest

from scripts.processes import wait_until
from tests.factories import SETOSA
from tests.integration.faulty_model import HUNG, POISON, faulty_template
from tests.integration.stack import Stack, poll_job, running
from tests.integration.test_faults import FAULT_ENV, boot, pool_children, row_body

pytestmark = pytest.mark.integration

ENV = {
    **FAULT_ENV,  # a hard limit of 8 s
    "MLOPS_LOGGING__JSON": "true",  # each line names the process that wrote it
    "MLOPS_WORKER__MAX_RETRIES_ON_CRASH": "2",
    # A sync job's deadline: its wait and this grace. Long enough here for the node killed by
    # its model, the visibility timeout and the retries (with less it ends `expired`).
    "MLOPS_API__SYNC_GRACE_SECONDS": "60",
}
POISON_ROW = [POISON, 3.0, 1.4, 0.2]


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    return faulty_template(tmp_path_factory.mktemp("template"))


@pytest.fixture(scope="module")
def home(tmp_path_factory, template):
    with running(Stack(tmp_path_factory.mktemp("home"), **ENV), boot(template)) as stack:
        yield stack


def predicted_by(service) -> list[int]:
    """The pid of the process that logged each "predict message" line, in order."""
    pids = []
    for line in service.output().splitlines():
        if '"predict message' not in line:
            continue
        record = orjson.loads(line)["record"]
        pids.append(record["process"]["id"])
    return pids


def sync_predict(client: httpx.Client, row: list[float] = SETOSA, wait: float = 20) -> dict:
    response = client.post("/predict", params={"wait": wait}, json=row_body(row))
    assert response.status_code in (200, 202), response.text
    body = response.json()
    return body if body["status"] in ("SUCCESS", "FAILURE") else poll_job(client, body["job_id"])


def test_a_lone_sync_request_is_served_by_the_main_process_and_async_ones_by_the_pool(home):
    worker = home.services["worker0"]
    before = len(predicted_by(worker))
    with home.client() as client:
        for _ in range(5):
            result = sync_predict(client)
            assert result["status"] == "SUCCESS" and result["predictions"] == ["setosa"]
        response = client.post("/predict", json=row_body(SETOSA))  # async: never alone
        assert response.status_code == 202, response.text
        assert poll_job(client, response.json()["job_id"])["status"] == "SUCCESS"
    wait_until(lambda: len(predicted_by(worker)) >= before + 6, 10, "six log lines")
    pids = predicted_by(worker)[before:]
    assert pids[:5] == [worker.pid] * 5
    assert pids[5] in pool_children(worker)


def test_a_hung_prediction_at_home_meets_the_hard_limit_and_the_node_restarts_in_place(home):
    worker = home.services["worker0"]
    (child,) = pool_children(worker)
    with home.client() as client:
        result = sync_predict(client, [HUNG, 3.0, 1.4, 0.2], wait=1)
        assert result["status"] == "FAILURE", result
        assert result["error"]["reason"] == "time_limit"
        assert "this node restarts" in worker.output()
        wait_until(lambda: worker.output().count("ready.") >= 2, 60, "the node ready again")
        home.wait_ready()
        assert worker.alive()  # the same process: make run, compose and Kubernetes saw nothing
        assert child not in pool_children(worker)  # a new pool with it
        after = sync_predict(client)
    assert after["status"] == "SUCCESS", after
    assert predicted_by(worker)[-1] == worker.pid  # still served at home


def test_a_model_that_kills_the_main_process_ends_its_job_in_the_pool(tmp_path, template):
    """The node dies with its first delivery; no one renews the message, so the sweep gives
    it to the replacement node after the visibility timeout, redelivered: into a pool
    process, whose deaths cost the node nothing, until the attempts run out."""
    with running(Stack(tmp_path, **ENV), boot(template)) as stack:
        first = stack.services["worker0"]
        with stack.client() as client:
            response = client.post("/predict", params={"wait": 1}, json=row_body(POISON_ROW))
            assert response.status_code == 202, response.text
            job_id = response.json()["job_id"]
            wait_until(lambda: not first.alive(), 30, "the node killed by its model")
            replacement = stack.start_worker("worker1")
            result = poll_job(client, job_id, 90)
            assert result["status"] == "FAILURE", result
            assert result["error"]["reason"] == "worker_lost"
            assert "died 3 times" in result["error"]["message"]  # 2 retries, then stop
            assert replacement.alive()
            assert sync_predict(client)["status"] == "SUCCESS"

"""The model lifecycle against the real thing: redis-server, worker processes, HTTP.

One gateway and one predict-only worker ("server") run for the whole module; each test starts
the training worker it needs (settings differ per test: margin, data, a slow estimator), so
the server worker is always one that was running before a promotion and never trained.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest

from core.jobs import attempts_key
from core.messages import RETRAIN_TASK, TRAIN_QUEUE, celery_message
from core.single_flight import lock_key
from scripts.processes import children, wait_until
from tests.integration.stack import (
    ADMIN_KEY,
    OTHER_PREDICT_KEY,
    SEED_BODY,
    Stack,
    poll_job,
    running,
)

RETRAIN_LOCK_KEY = lock_key("iris")  # the default model's retrain lock

pytestmark = pytest.mark.integration

SWAP_SECONDS = 2.0
TRAIN_TIMEOUT = 180
# Several seconds of fitting (full epochs, no early stop): long enough to watch a run.
SLOW_ESTIMATOR = {
    "MLOPS_TRAINING__ESTIMATOR__CLASS_PATH": "sklearn.neural_network.MLPClassifier",
    "MLOPS_TRAINING__ESTIMATOR__PARAMS": orjson.dumps(
        {"hidden_layer_sizes": [64], "max_iter": 6000, "tol": 0.0, "n_iter_no_change": 10**6}
    ).decode(),
}
SLOW_ESTIMATOR["MLOPS_TRAINING__ESTIMATOR__PARAMS"] = (
    "@json " + SLOW_ESTIMATOR["MLOPS_TRAINING__ESTIMATOR__PARAMS"]
)


@pytest.fixture(scope="module")
def lifecycle(tmp_path_factory):
    def start(stack: Stack) -> None:
        stack.start_redis()
        trained = stack.train()
        assert trained.returncode == 0, trained.stderr
        stack.start_worker("server", queues="predict")
        stack.start_gateway()
        stack.wait_ready()

    with running(Stack(tmp_path_factory.mktemp("lifecycle")), start) as stack:
        yield stack


@contextlib.contextmanager
def train_worker(stack: Stack, name: str, concurrency: int = 1, **env: str) -> Iterator[None]:
    """A worker on the `train` queue only, with its own settings, for one test."""
    service = stack.start_worker(name, queues=TRAIN_QUEUE, concurrency=concurrency, **env)
    try:
        yield
    except BaseException:
        print(stack.logs_text())  # noqa: T201 - shown by pytest on failure
        raise
    finally:
        service.stop()


def production(stack: Stack) -> int | None:
    with stack.client() as client:
        return client.get("/version").json()["model_version"]


def retrain(stack: Stack) -> str:
    with stack.admin() as admin:
        response = admin.post("/retrain", params={"force": "true"})  # a new version each time
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def finished(stack: Stack, job_id: str) -> dict:
    with stack.admin() as admin:
        return poll_job(admin, job_id, timeout=TRAIN_TIMEOUT)


def alias_changed_at(stack: Stack) -> float:
    return (stack.artifacts / "iris" / "aliases.json").stat().st_mtime


def served_versions(stack: Stack) -> set:
    """The versions the live worker processes report (their heartbeats in mlops:workers)."""
    with stack.client() as client:
        return {w["model_version"] for w in client.get("/models").json()["workers"]}


def wait_served(stack: Stack, version: int, since: float) -> float:
    """Seconds from ``since`` until every live worker process serves ``version``."""
    wait_until(lambda: served_versions(stack) == {version}, 30, f"every worker on v{version}")
    return time.time() - since


class PredictLoop:
    """Posts ?wait=10 predictions back to back in a thread; records every answer."""

    def __init__(self, stack: Stack):
        self.stack = stack
        self.answers: list[tuple[float, int, int | None]] = []  # (sent at, status, version)
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.stack.client() as client:
            while not self._stop.is_set():
                sent = time.time()
                try:
                    response = client.post("/predict?wait=10", json=SEED_BODY)
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                    continue
                body = response.json()
                if response.status_code != 200 or body.get("status") != "SUCCESS":
                    self.errors.append(f"{response.status_code} {response.text[:300]}")
                self.answers.append((sent, response.status_code, body.get("model_version")))

    def __enter__(self) -> PredictLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def versions(self) -> set:
        return {version for _, _, version in self.answers}

    def sent_after(self, moment: float) -> list[int | None]:
        return [version for sent, _, version in self.answers if sent >= moment]


def test_retrain_promotes_and_running_worker_serves_it_under_load(lifecycle):
    old = production(lifecycle)
    with train_worker(lifecycle, "trainer"), PredictLoop(lifecycle) as loop:
        wait_until(lambda: len(loop.answers) >= 5, 30, "predictions before the retrain")
        result = finished(lifecycle, retrain(lifecycle))
        assert result["status"] == "SUCCESS", result
        outcome = result["result"]
        assert outcome["decision"] == "promoted", outcome
        new = outcome["version"]
        assert new == old + 1
        promoted_at = alias_changed_at(lifecycle)
        assert wait_served(lifecycle, new, promoted_at) < SWAP_SECONDS
        deadline = promoted_at + SWAP_SECONDS
        wait_until(lambda: len(loop.sent_after(deadline)) >= 5, 30, "predictions after swap")
    assert loop.errors == []
    assert loop.versions() == {old, new}  # only the old or the new version, never another
    assert set(loop.sent_after(deadline)) == {new}
    assert production(lifecycle) == new


def test_version_everywhere_and_complete_model_card(lifecycle):
    version = production(lifecycle)
    with lifecycle.client() as client:
        answer = client.post("/predict?wait=10", json=SEED_BODY).json()
        assert answer["model_version"] == version and answer["api_version"]
        assert client.get("/version").json()["api_version"] == answer["api_version"]
        ready = client.get("/ready").json()
        assert {w["model_version"] for w in ready["workers"]} == {version}
        meta = client.get(f"/models/{version}").json()
        card = client.get(f"/models/{version}/card")
    assert card.status_code == 200 and card.headers["content-type"].startswith("text/html")
    html = card.text
    for expected in (
        f"iris v{version}",
        meta["data_fingerprint"],
        meta["gate"]["decision"],
        f"{meta['metrics']['accuracy']:.4f}",
        meta["sklearn_version"],
        "<svg",
        "confusion matrix",
    ):
        assert expected in html, expected
    for name in meta["classes"]:
        assert name in html


def test_rejected_candidate_leaves_production_alone(lifecycle):
    before = production(lifecycle)
    with train_worker(lifecycle, "strict", MLOPS_TRAINING__PROMOTION_MARGIN="0.5"):
        result = finished(lifecycle, retrain(lifecycle))
    assert result["status"] == "SUCCESS", result
    outcome = result["result"]
    assert outcome["decision"] == "rejected" and outcome["promoted"] is False
    assert outcome["margin"] == 0.5
    assert isinstance(outcome["candidate"], float) and isinstance(outcome["production"], float)
    assert outcome["production_version"] == before
    assert production(lifecycle) == before
    assert served_versions(lifecycle) == {before}
    with lifecycle.client() as client:
        meta = client.get(f"/models/{outcome['version']}").json()
        card = client.get(f"/models/{outcome['version']}/card").text
    assert meta["gate"]["decision"] == "rejected" and meta["production"] is False
    assert "rejected" in card


def test_two_retrains_at_once_make_one_run_and_beat_is_skipped(lifecycle):
    versions_before = len(list((lifecycle.artifacts / "iris").glob("[0-9]*")))
    with train_worker(lifecycle, "slow", concurrency=2, **SLOW_ESTIMATOR):
        barrier = threading.Barrier(2)
        ids: list[str] = []

        def post() -> None:
            barrier.wait(timeout=10)
            ids.append(retrain(lifecycle))

        threads = [threading.Thread(target=post) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert len(ids) == 2 and ids[0] == ids[1], ids
        job_id = ids[0]

        # Progress: the run is seconds long, so GET /jobs shows it while it fits.
        seen: list[dict] = []

        def fitting() -> bool:
            with lifecycle.admin() as admin:
                body = admin.get(f"/jobs/{job_id}").json()
            seen.append(body)
            return body["status"] == "STARTED" and body.get("progress", {}).get("step") == "fitting"

        wait_until(fitting, 60, "the retrain reporting its fitting step", interval=0.02)
        assert 0 < seen[-1]["progress"]["percent"] < 100

        # A beat-style retrain (same task, sent straight to the train queue) while it runs.
        beat_id, payload = celery_message(RETRAIN_TASK, [], queue=TRAIN_QUEUE)
        lifecycle.redis.client().lpush(TRAIN_QUEUE, payload)
        beat = finished(lifecycle, beat_id)
        assert beat["status"] == "SUCCESS", beat
        assert beat["result"]["decision"] == "skipped"
        assert beat["result"]["running_job_id"] == job_id

        result = finished(lifecycle, job_id)
    assert result["status"] == "SUCCESS", result
    assert result["result"]["decision"] in ("promoted", "rejected")
    assert len(list((lifecycle.artifacts / "iris").glob("[0-9]*"))) == versions_before + 1
    assert lifecycle.redis.client().get(RETRAIN_LOCK_KEY) is None


def test_missing_training_data_fails_the_job_and_changes_nothing(lifecycle):
    before = production(lifecycle)
    versions = sorted(p.name for p in (lifecycle.artifacts / "iris").glob("[0-9]*"))
    with train_worker(
        lifecycle,
        "nodata",
        MLOPS_TRAINING__TRAINER="csv",
        MLOPS_TRAINING__CSV__PATH="/nonexistent.csv",
    ):
        result = finished(lifecycle, retrain(lifecycle))
    assert result["status"] == "FAILURE", result
    assert "data file not found" in result["error"]["message"]
    assert "/nonexistent.csv" in result["error"]["message"]
    assert production(lifecycle) == before
    assert sorted(p.name for p in (lifecycle.artifacts / "iris").glob("[0-9]*")) == versions
    assert lifecycle.redis.client().get(RETRAIN_LOCK_KEY) is None  # the crash freed the lock


def test_manual_promote_and_rollback(lifecycle):
    with lifecycle.client() as client:
        models = client.get("/models").json()
    current = models["production_version"]
    assert models["previous_versions"], models
    with lifecycle.admin() as admin:
        missing = admin.post("/models/999999/promote")
        assert missing.status_code == 404, missing.text

        other = next(v["version"] for v in models["versions"] if v["version"] != current)
        artifact = lifecycle.artifacts / "iris" / str(other) / "model.joblib"
        original = artifact.read_bytes()
        tampered = bytearray(original)
        tampered[len(tampered) // 2] ^= 0xFF
        artifact.write_bytes(bytes(tampered))
        try:
            refused = admin.post(f"/models/{other}/promote")
        finally:
            artifact.write_bytes(original)
        assert refused.status_code == 409, refused.text
        assert refused.json()["reason"] == "integrity_check_failed"
        assert "sha256" in str(refused.json()["detail"])
        assert production(lifecycle) == current

        rolled = admin.post("/models/rollback")
        assert rolled.status_code == 200, rolled.text
        previous = rolled.json()["production"]
        assert previous == models["previous_versions"][-1]
        assert wait_served(lifecycle, previous, alias_changed_at(lifecycle)) < SWAP_SECONDS
        with lifecycle.client() as client:
            answer = client.post("/predict?wait=10", json=SEED_BODY).json()
        assert answer["model_version"] == previous

        promoted = admin.post(f"/models/{current}/promote")
        assert promoted.status_code == 200, promoted.text
        assert wait_served(lifecycle, current, alias_changed_at(lifecycle)) < SWAP_SECONDS

        for _ in range(len(models["versions"]) + 1):
            last = admin.post("/models/rollback")
            if last.status_code != 200:
                break
        assert last.status_code == 409, last.text
        assert last.json()["reason"] == "alias_conflict"
    assert production(lifecycle) == last_production(lifecycle)


def last_production(stack: Stack) -> int:
    """What aliases.json says, read from the file the workers follow."""
    return orjson.loads((stack.artifacts / "iris" / "aliases.json").read_bytes())["production"]


def test_cli_train_takes_the_same_lock(lifecycle):
    versions = sorted(p.name for p in (lifecycle.artifacts / "iris").glob("[0-9]*"))
    client = lifecycle.redis.client()
    client.set(RETRAIN_LOCK_KEY, "job-held-elsewhere", px=60_000)
    refused = lifecycle.train()
    assert refused.returncode == 2, refused.stderr
    assert "training job job-held-elsewhere is already running" in refused.stderr
    assert sorted(p.name for p in (lifecycle.artifacts / "iris").glob("[0-9]*")) == versions

    with lifecycle.admin() as admin:  # the API joins the run the CLI (here: someone) holds
        joined = admin.post("/retrain").json()
    assert joined["job_id"] == "job-held-elsewhere" and joined["deduplicated"] is True

    client.delete(RETRAIN_LOCK_KEY)
    trained = lifecycle.train()
    assert trained.returncode == 0, trained.stderr
    assert client.get(RETRAIN_LOCK_KEY) is None
    records = [orjson.loads(client.get(k)) for k in client.keys("mlops:job:cli-*")]
    mine = [r for r in records if r["result"]["version"] == len(versions) + 1]
    assert [r["status"] for r in mine] == ["SUCCESS"]  # visible to GET /jobs like any run
    assert all(r["kind"] == "train" and r["requested_by"] == "cli" for r in records)

    unlocked = lifecycle.train(MLOPS_REDIS_URL="redis://127.0.0.1:1/0")
    assert unlocked.returncode == 0, unlocked.stderr
    assert "without the single-flight lock" in unlocked.stderr


# -- hardening: a retrain nobody can take, crash loops, fencing, owners, audit ----------------
def test_a_retrain_no_worker_can_take_is_visible_is_not_queued_twice_and_a_plain_worker_runs_it(
    lifecycle,
):
    """Only the predict-only "server" worker runs: /ready and GET /models say `train` has no
    consumer, the job says what it waits for, a second request joins it however long it
    waits, and the documented `celery -A workers worker` (no -Q) serves it."""
    with lifecycle.admin() as admin:
        ready = admin.get("/ready")
        models = admin.get("/models").json()
        first = retrain(lifecycle)
        waiting = admin.get(f"/jobs/{first}").json()
        claim_ms = lifecycle.redis.client().pttl(RETRAIN_LOCK_KEY)
        second = admin.post("/retrain").json()
    assert ready.status_code == 200, ready.text
    assert any("'train'" in w for w in ready.json()["warnings"]), ready.json()
    assert models["consumers"]["train"] == 0 and models["consumers"]["predict"] >= 1
    assert any("'train'" in w for w in models["warnings"])
    assert waiting["status"] == "PENDING"
    assert waiting["waiting"]["queue"] == "train" and waiting["waiting"]["consumers"] == 0
    # The claim lasts as long as the job may wait (its record's TTL), not one 60 s lease.
    assert claim_ms > 10 * 60_000, claim_ms
    assert second["job_id"] == first and second["deduplicated"] is True
    # This job's message, once. An earlier test's retrain can be back on the queue meanwhile: a
    # worker stopped right after its job ended may leave the acknowledgement to the sweep.
    queued = lifecycle.redis.client().lrange(TRAIN_QUEUE, 0, -1)
    assert [orjson.loads(raw)["headers"]["id"] for raw in queued].count(first) == 1, queued

    plain = lifecycle.start_worker("plain")  # exactly `celery -A workers worker`
    try:
        assert "-Q" not in plain.args
        result = finished(lifecycle, first)
        with lifecycle.admin() as admin:
            wait_until(lambda: admin.get("/ready").json()["warnings"] == [], 10, "no warning")
    finally:
        plain.stop()
    assert result["status"] == "SUCCESS", result
    assert result["result"]["decision"] in ("promoted", "rejected")


def _kill_run(stack: Stack, worker, job_id: str, attempt: int) -> None:
    """SIGKILL the pool child once it started the ``attempt``-th run of the job."""
    client = stack.redis.client()

    def run_started() -> bool:
        return int(client.get(attempts_key(job_id)) or 0) == attempt and bool(children(worker.pid))

    wait_until(run_started, 60, f"attempt {attempt} of the retrain", interval=0.05)
    time.sleep(0.5)  # well into the run
    for child in children(worker.pid):
        os.kill(child, signal.SIGKILL)


def test_a_retrain_that_kills_its_worker_ends_in_failure_after_max_retries(lifecycle):
    before = production(lifecycle)
    versions = sorted(p.name for p in (lifecycle.artifacts / "iris").glob("[0-9]*"))
    env = {
        **SLOW_ESTIMATOR,
        "MLOPS_WORKER__MAX_RETRIES_ON_CRASH": "1",
        "MLOPS_TRAINING__LOCK_LEASE_SECONDS": "2",  # the dead run's lease lapses quickly
    }
    with train_worker(lifecycle, "oom", **env):
        worker = lifecycle.services["oom"]
        job_id = retrain(lifecycle)
        for attempt in (1, 2):  # the first run and its one retry die (as under the OOM killer)
            _kill_run(lifecycle, worker, job_id, attempt)
        result = finished(lifecycle, job_id)
    assert result["status"] == "FAILURE", result
    assert result["error"]["reason"] == "worker_lost"
    assert "died 2 times" in result["error"]["message"]
    assert production(lifecycle) == before
    assert sorted(p.name for p in (lifecycle.artifacts / "iris").glob("[0-9]*")) == versions
    assert lifecycle.redis.client().get(RETRAIN_LOCK_KEY) is None


def test_a_manual_promote_during_a_retrain_is_not_overwritten(lifecycle):
    assert lifecycle.train().returncode == 0  # a production that is not v1
    started_from = last_production(lifecycle)  # the store's, not the gateway's 0.5 s view
    assert started_from != 1
    with train_worker(lifecycle, "fenced", **SLOW_ESTIMATOR):
        job_id = retrain(lifecycle)

        def fitting() -> bool:
            with lifecycle.admin() as admin:
                body = admin.get(f"/jobs/{job_id}").json()
            return body.get("progress", {}).get("step") == "fitting"

        wait_until(fitting, 60, "the retrain fitting", interval=0.05)
        with lifecycle.admin() as admin:
            assert admin.post("/models/1/promote").status_code == 200  # the operator's choice
        result = finished(lifecycle, job_id)
    assert result["status"] == "SUCCESS", result
    outcome = result["result"]
    assert outcome["decision"] == "rejected", outcome
    assert f"changed from v{started_from} to v1" in outcome["reason"]
    assert production(lifecycle) == 1


def test_jobs_belong_to_their_key_and_changes_leave_an_audit_trail(lifecycle):
    with lifecycle.client() as owner, lifecycle.client(OTHER_PREDICT_KEY) as other:
        job_id = owner.post("/predict?wait=10", json=SEED_BODY).json()["job_id"]
        mine = owner.get(f"/jobs/{job_id}")
        theirs = other.get(f"/jobs/{job_id}")
        unknown = other.get("/jobs/no-such-job")
    with lifecycle.admin() as admin:
        as_admin = admin.get(f"/jobs/{job_id}")
        current = production(lifecycle)
        promoted = admin.post(f"/models/{current}/promote")
        meta = admin.get(f"/models/{current}").json()
    assert mine.status_code == 200 and mine.json()["status"] == "SUCCESS"
    assert theirs.status_code == 404, theirs.text
    assert theirs.json()["detail"] == unknown.json()["detail"].replace("no-such-job", job_id)
    assert as_admin.status_code == 200
    assert promoted.status_code == 200
    last = meta["audit"][-1]
    assert last["action"] == "promoted" and last["by"].startswith("api key ")
    assert ADMIN_KEY not in last["by"]
    assert f"promoted iris v{current}" in lifecycle.services["gateway"].output()
    registered = [a for a in meta["audit"] if a["action"] == "registered"]
    assert registered and registered[0]["by"].startswith(("cli (", "job "))

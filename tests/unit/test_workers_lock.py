"""core/lock.py LeaseLock (fakeredis) and the CLI's single flight (training/single_flight.py)."""

from __future__ import annotations

import threading

import fakeredis
import orjson
import pytest

from core.lock import LeaseLock
from core.messages import RETRAIN_LOCK_KEY, job_key
from core.settings import get_settings
from training import single_flight as single_flight_module
from training.single_flight import TrainingRunning, single_flight

KEY = "mlops:lock:test"


@pytest.fixture
def client():
    return fakeredis.FakeRedis()


def lock(client, owner: str, lease: float = 60) -> LeaseLock:
    return LeaseLock(client, KEY, owner, lease)


def test_acquire_sets_owner_with_a_lease(client):
    assert lock(client, "a").acquire()
    assert lock(client, "b").holder() == "a"
    assert 0 < client.pttl(KEY) <= 60_000


def test_second_owner_cannot_acquire_but_owner_can_reacquire(client):
    assert lock(client, "a").acquire()
    assert not lock(client, "b").acquire()
    assert lock(client, "a").acquire()  # e.g. the gateway took it with this job's id
    assert lock(client, "b").holder() == "a"


def test_renew_extends_only_the_owners_lease(client):
    first = lock(client, "a")
    first.acquire()
    client.pexpire(KEY, 500)
    assert not lock(client, "b").renew()
    assert client.pttl(KEY) <= 500
    assert first.renew()
    assert client.pttl(KEY) > 50_000


def test_release_only_by_owner(client):
    lock(client, "a").acquire()
    assert not lock(client, "b").release()
    assert client.get(KEY) == b"a"
    assert lock(client, "a").release()
    assert client.get(KEY) is None
    assert not lock(client, "a").release()


def test_after_the_lease_runs_out_the_next_caller_gets_it(client):
    """A crashed holder never renews: when its lease is gone, b takes the lock, a is out."""
    crashed = lock(client, "a")
    crashed.acquire()
    client.delete(KEY)  # what the lease expiry does (Redis's own clock; not re-tested here)
    assert lock(client, "b").acquire()
    assert not crashed.renew()
    assert not crashed.release()
    assert lock(client, "c").holder() == "b"


def test_renewing_renews_in_the_background_and_releases_at_the_end(client, monkeypatch):
    held = lock(client, "a", lease=0.03)  # renewal every 10 ms
    renewed = threading.Event()
    real_renew = held.renew

    def renew() -> bool:
        renewed.set()
        return real_renew()

    monkeypatch.setattr(held, "renew", renew)
    held.acquire()
    with held.renewing():
        assert renewed.wait(timeout=10)
    assert client.get(KEY) is None


def test_renewing_releases_when_the_work_fails(client):
    held = lock(client, "a")
    held.acquire()
    with pytest.raises(RuntimeError), held.renewing():
        raise RuntimeError("training crashed")
    assert client.get(KEY) is None


def test_renewing_does_not_release_someone_elses_lock(client):
    held = lock(client, "a")
    held.acquire()
    with held.renewing():
        client.set(KEY, "b")  # a's lease ran out and b took over meanwhile
    assert client.get(KEY) == b"b"


# -- the CLI's single flight ------------------------------------------------------------------
@pytest.fixture
def cli_redis(monkeypatch):
    server = fakeredis.FakeServer()
    monkeypatch.setattr(
        single_flight_module, "sync_client", lambda _url: fakeredis.FakeRedis(server=server)
    )
    return fakeredis.FakeRedis(server=server)


def test_cli_takes_the_lock_and_records_the_job(cli_redis):
    with single_flight(get_settings()) as result:
        job_id = cli_redis.get(RETRAIN_LOCK_KEY).decode()
        assert orjson.loads(cli_redis.get(job_key(job_id)))["status"] == "STARTED"
        result["decision"] = "promoted"
    assert cli_redis.get(RETRAIN_LOCK_KEY) is None
    record = orjson.loads(cli_redis.get(job_key(job_id)))
    assert record["status"] == "SUCCESS" and record["result"] == {"decision": "promoted"}


def test_cli_refuses_while_another_training_runs(cli_redis):
    cli_redis.set(RETRAIN_LOCK_KEY, "job-x")
    with pytest.raises(TrainingRunning, match="training job job-x is already running"):  # noqa: SIM117
        with single_flight(get_settings()):
            pytest.fail("trained although the lock was held")
    assert cli_redis.get(RETRAIN_LOCK_KEY) == b"job-x"


def test_cli_failed_training_releases_and_records_failure(cli_redis):
    with pytest.raises(ValueError), single_flight(get_settings()):
        job_id = cli_redis.get(RETRAIN_LOCK_KEY).decode()
        raise ValueError("bad data")
    assert cli_redis.get(RETRAIN_LOCK_KEY) is None
    record = orjson.loads(cli_redis.get(job_key(job_id)))
    assert record["status"] == "FAILURE" and "bad data" in record["error"]["message"]


def test_cli_without_redis_trains_unlocked_and_warns(monkeypatch):
    monkeypatch.setenv("MLOPS_REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens there
    from core.settings import reset_settings

    reset_settings()
    warnings = []
    handler = single_flight_module.logger.add(warnings.append, level="WARNING")
    try:
        with single_flight(get_settings()) as result:
            result["ran"] = True
    finally:
        single_flight_module.logger.remove(handler)
    assert result == {"ran": True}
    assert any("without the single-flight lock" in str(m) for m in warnings)

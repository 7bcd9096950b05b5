"""training/single_flight.py: the CLI takes the retrain lock of core/single_flight.py."""

from __future__ import annotations

import fakeredis
import orjson
import pytest

from core.jobs import job_key
from core.settings import get_settings
from core.single_flight import Holder, holder, lock_key, request_retrain
from training import single_flight as single_flight_module
from training.single_flight import TrainingRunning, single_flight

RETRAIN_LOCK_KEY = lock_key("iris")  # the default model's retrain lock

HOUR = 3600


@pytest.fixture
def cli_redis(monkeypatch, redis_server, redis_client):
    """The Redis the CLI connects to: this test's in-memory one."""
    monkeypatch.setattr(
        single_flight_module, "sync_client", lambda _url: fakeredis.FakeRedis(server=redis_server)
    )
    return redis_client


def test_cli_takes_the_lock_and_records_the_job(cli_redis):
    with single_flight(get_settings()) as (result, lease):
        running = holder(cli_redis, "iris")
        assert running.running and running.job_id == lease.job_id
        assert orjson.loads(cli_redis.get(job_key(lease.job_id)))["status"] == "STARTED"
        result["decision"] = "promoted"
    assert cli_redis.get(RETRAIN_LOCK_KEY) is None
    record = orjson.loads(cli_redis.get(job_key(lease.job_id)))
    assert record["status"] == "SUCCESS" and record["result"] == {"decision": "promoted"}
    assert record["requested_by"] == "cli"


def test_cli_refuses_while_another_training_is_queued_or_runs(cli_redis):
    job_id, _ = request_retrain(cli_redis, "iris", requested_by="a", ttl=HOUR)
    with pytest.raises(TrainingRunning, match=f"training job {job_id} is already running"):  # noqa: SIM117
        with single_flight(get_settings()):
            pytest.fail("trained although the lock was held")
    assert holder(cli_redis, "iris") == Holder(job_id, running=False)


def test_cli_failed_training_releases_and_records_failure(cli_redis):
    with pytest.raises(ValueError), single_flight(get_settings()) as (_result, lease):
        raise ValueError("bad data")
    assert cli_redis.get(RETRAIN_LOCK_KEY) is None
    record = orjson.loads(cli_redis.get(job_key(lease.job_id)))
    assert record["status"] == "FAILURE" and "bad data" in record["error"]["message"]


def test_cli_without_redis_trains_unlocked_and_warns(monkeypatch):
    monkeypatch.setenv("MLOPS_REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens there
    from core.settings import reset_settings

    reset_settings()
    warnings = []
    handler = single_flight_module.logger.add(warnings.append, level="WARNING")
    try:
        with single_flight(get_settings()) as (result, lease):
            result["ran"] = True
    finally:
        single_flight_module.logger.remove(handler)
    assert result == {"ran": True} and lease is None
    assert any("without the single-flight lock" in str(m) for m in warnings)

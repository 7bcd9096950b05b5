"""workers/schedule.py: the beat schedule comes from settings and can be switched off."""

from __future__ import annotations

import subprocess
import sys

import fakeredis
import orjson
import pytest

from core.jobs import job_key
from core.messages import MONITOR_TASK, RETRAIN_TASK, TRAIN_QUEUE
from core.settings import ROOT, SettingsError
from core.single_flight import Holder, holder
from tests.factories import decode_message, settings_with
from workers import schedule as schedule_module
from workers.celery_app import create_app
from workers.schedule import MONITOR_ENTRY, RETRAIN_ENTRY, SingleFlightScheduler, beat_schedule


def test_entry_from_settings(monkeypatch):
    settings = settings_with(
        monkeypatch, SCHEDULE__RETRAIN_ENABLED="true", SCHEDULE__RETRAIN_CRON="15 4 1-7 */2 mon"
    )
    entry = beat_schedule(settings)[RETRAIN_ENTRY]
    assert entry["task"] == RETRAIN_TASK
    assert entry["options"] == {"queue": TRAIN_QUEUE}
    cron = entry["schedule"]
    assert cron.minute == {15}
    assert cron.hour == {4}
    assert cron.day_of_month == set(range(1, 8))
    assert cron.month_of_year == {1, 3, 5, 7, 9, 11}
    assert cron.day_of_week == {1}


def test_default_cron_is_daily_at_three(monkeypatch):
    settings = settings_with(monkeypatch, SCHEDULE__RETRAIN_ENABLED="true")
    cron = beat_schedule(settings)[RETRAIN_ENTRY]["schedule"]
    assert (cron.minute, cron.hour) == ({0}, {3})
    assert cron.day_of_week == set(range(7)) and len(cron.day_of_month) == 31


def test_switched_off(monkeypatch):
    settings = settings_with(
        monkeypatch, SCHEDULE__RETRAIN_ENABLED="false", MONITORING__ENABLED="false"
    )
    assert beat_schedule(settings) == {}


def test_a_drift_check_per_monitored_model_on_its_predict_queue(monkeypatch):
    settings = settings_with(
        monkeypatch,
        SCHEDULE__RETRAIN_ENABLED="false",
        MONITORING__INTERVAL_SECONDS="60",
        MODELS__BIG__QUEUE="big",
        MODELS__BIG__MONITORING='@json {"interval_seconds": 5}',
        MODELS__QUIET__MONITORING='@json {"enabled": false}',
    )
    assert beat_schedule(settings) == {
        f"{MONITOR_ENTRY}[iris]": {
            "task": MONITOR_TASK,
            "schedule": 60.0,
            "args": ["iris"],
            "options": {"queue": "predict", "expires": 60.0},
        },
        f"{MONITOR_ENTRY}[big]": {
            "task": MONITOR_TASK,
            "schedule": 5.0,
            "args": ["big"],
            "options": {"queue": "big", "expires": 5.0},
        },
    }


@pytest.mark.parametrize("cron", ["61 * * * *", "0 25 * * *", "0 3 * * funday"])
def test_bad_cron_stops_with_the_setting_named(monkeypatch, cron):
    settings = settings_with(
        monkeypatch, SCHEDULE__RETRAIN_ENABLED="true", SCHEDULE__RETRAIN_CRON=cron
    )
    with pytest.raises(SettingsError, match=r"schedule\.retrain_cron"):
        beat_schedule(settings)


def app_schedule(enabled: str) -> str:
    """The app `celery -A workers beat` finds (workers.celery:app), in a fresh process."""
    code = (
        "import sys; from workers.celery import app; "
        "sys.stdout.write(repr(sorted(app.conf.beat_schedule)))"
    )
    env = {"MLOPS_ENV": "testing", "MLOPS_SCHEDULE__RETRAIN_ENABLED": enabled, "PATH": ""}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


def test_celery_app_schedule_follows_the_environment():
    assert app_schedule("true") == repr([f"{MONITOR_ENTRY}[iris]", RETRAIN_ENTRY])
    assert app_schedule("false") == repr([f"{MONITOR_ENTRY}[iris]"])


def test_beat_queues_its_retrain_through_the_single_flight(
    monkeypatch, tmp_path, redis_server, redis_client
):
    """Due twice while the first retrain waits: one job queued, the second joins it."""
    monkeypatch.setattr(
        schedule_module, "sync_client", lambda _url: fakeredis.FakeRedis(server=redis_server)
    )
    app = create_app(settings_with(monkeypatch, SCHEDULE__RETRAIN_ENABLED="true"))
    scheduler = SingleFlightScheduler(app, schedule_filename=str(tmp_path / "beat"), lazy=True)
    scheduler.setup_schedule()
    entry = scheduler.schedule[RETRAIN_ENTRY]
    scheduler.apply_async(entry, advance=False)
    scheduler.apply_async(entry, advance=False)
    (message,) = redis_client.lrange(TRAIN_QUEUE, 0, -1)
    job_id = orjson.loads(message)["headers"]["id"]
    assert holder(redis_client, "iris") == Holder(job_id, running=False)
    record = orjson.loads(redis_client.get(job_key(job_id)))
    assert (record["requested_by"], record["trigger"]) == ("beat", "schedule")
    _, (_args, kwargs, _embed) = decode_message(message)
    assert kwargs == {"trigger": "schedule", "force": False}


def test_beat_sends_the_drift_check_as_a_plain_task(monkeypatch, tmp_path):
    app = create_app(settings_with(monkeypatch, SCHEDULE__RETRAIN_ENABLED="false"))
    scheduler = SingleFlightScheduler(app, schedule_filename=str(tmp_path / "beat"), lazy=True)
    scheduler.setup_schedule()
    sent = []
    monkeypatch.setattr(
        type(scheduler).__mro__[1], "apply_async", lambda self, entry, *a, **k: sent.append(entry)
    )
    scheduler.apply_async(scheduler.schedule[f"{MONITOR_ENTRY}[iris]"], advance=False)
    assert [(e.task, e.args, e.options["queue"]) for e in sent] == [
        (MONITOR_TASK, ["iris"], "predict")
    ]

"""The beat schedule, from settings: one retrain entry, on by default, can be switched off."""

from __future__ import annotations

from celery.schedules import crontab

from core.messages import RETRAIN_TASK, TRAIN_QUEUE
from core.settings import SettingsError

RETRAIN_ENTRY = "retrain-on-schedule"


def retrain_crontab(cron: str) -> crontab:
    """``minute hour day-of-month month day-of-week``; a bad field stops start-up with a message."""
    try:
        minute, hour, day_of_month, month_of_year, day_of_week = cron.split()
        return crontab(
            minute=minute,
            hour=hour,
            day_of_month=day_of_month,
            month_of_year=month_of_year,
            day_of_week=day_of_week,
        )
    except ValueError as exc:
        raise SettingsError(f"invalid settings: schedule.retrain_cron {cron!r}: {exc}") from None


def beat_schedule(settings) -> dict:
    if not settings.schedule.retrain_enabled:
        return {}
    return {
        RETRAIN_ENTRY: {
            "task": RETRAIN_TASK,
            "schedule": retrain_crontab(str(settings.schedule.retrain_cron)),
            "options": {"queue": TRAIN_QUEUE},
        }
    }

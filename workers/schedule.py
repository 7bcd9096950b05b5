"""The beat schedule, from settings: one retrain entry, on by default, can be switched off."""

from __future__ import annotations

from celery.schedules import crontab

from core.messages import RETRAIN_TASK, TRAIN_QUEUE

RETRAIN_ENTRY = "retrain-on-schedule"


def beat_schedule(settings) -> dict:
    if not settings.schedule.retrain_enabled:
        return {}
    minute, hour, day_of_month, month_of_year, day_of_week = settings.schedule.retrain_cron.split()
    return {
        RETRAIN_ENTRY: {
            "task": RETRAIN_TASK,
            "schedule": crontab(
                minute=minute,
                hour=hour,
                day_of_month=day_of_month,
                month_of_year=month_of_year,
                day_of_week=day_of_week,
            ),
            "options": {"queue": TRAIN_QUEUE},
        }
    }

"""The beat schedule, from settings: one retrain entry, on by default, can be switched off.

Beat queues its retrain through the same single flight as ``POST /retrain``
(:class:`SingleFlightScheduler`): while a retrain is queued or running, a scheduled one joins it
instead of queueing a second run.
"""

from __future__ import annotations

from celery.beat import PersistentScheduler
from celery.schedules import crontab
from loguru import logger

from core.messages import RETRAIN_TASK, TRAIN_QUEUE
from core.redis import sync_client
from core.settings import Settings, SettingsError
from core.single_flight import request_retrain
from workers.runtime import app_settings

RETRAIN_ENTRY = "retrain-on-schedule"


def retrain_crontab(cron: str, model: str | None = None) -> crontab:
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
        where = f"models.{model}.schedule" if model else "schedule"
        raise SettingsError(f"invalid settings: {where}.retrain_cron {cron!r}: {exc}") from None


def beat_schedule(settings: Settings) -> dict:
    """One entry per model whose schedule is on (the default model's is RETRAIN_ENTRY)."""
    entries = {}
    for name, model in settings.models.items():
        if not model.schedule.retrain_enabled:
            continue
        entry = RETRAIN_ENTRY if name == settings.default_model else f"{RETRAIN_ENTRY}[{name}]"
        entries[entry] = {
            "task": RETRAIN_TASK,
            "schedule": retrain_crontab(str(model.schedule.retrain_cron), name),
            "args": [name],
            "options": {"queue": TRAIN_QUEUE},
        }
    return entries


class SingleFlightScheduler(PersistentScheduler):
    """Celery's default scheduler, but the retrain entry is queued through the single flight."""

    def apply_async(self, entry, producer=None, advance=True, **kwargs):
        if entry.task != RETRAIN_TASK:
            return super().apply_async(entry, producer, advance, **kwargs)
        if advance:
            entry = self.reserve(entry)
        settings = app_settings()
        model = entry.args[0] if entry.args else settings.default_model
        client = sync_client(settings.redis_url)
        try:
            job_id, joined = request_retrain(
                client,
                model,
                requested_by="beat",
                ttl=settings.api.jobs_ttl_seconds,
                trigger="schedule",
            )
        finally:
            client.close()
        if joined:
            logger.info("scheduled retrain of {} joins training job {}", model, job_id)
        else:
            logger.info("scheduled retrain of {} queued as job {}", model, job_id)
        return None

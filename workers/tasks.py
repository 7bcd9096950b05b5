"""Thin Celery tasks: each hands its message to a plain function (workers.jobs, .retrain)."""

from __future__ import annotations

from celery import Celery
from loguru import logger

from core.messages import PREDICT_TASK, RETRAIN_TASK
from workers.jobs import run_message
from workers.retrain import run_retrain
from workers.runtime import runtime


def register_tasks(app: Celery, settings) -> None:
    worker = settings.worker

    @app.task(
        name=PREDICT_TASK,
        bind=True,
        ignore_result=True,
        time_limit=worker.predict_time_limit,
        soft_time_limit=worker.predict_time_limit * 0.9,
    )
    def predict_batch(self, jobs: list[dict]) -> dict:
        rt = runtime()
        summary = run_message(
            rt.redis,
            rt.cache,
            jobs,
            task_id=self.request.id,
            ttl=rt.settings.api.jobs_ttl_seconds,
            max_attempts=rt.settings.worker.max_retries_on_crash,
        )
        # One line per message (not per job: that would cost more than the prediction),
        # carrying every job's ids so one grep follows a prediction from the gateway.
        logger.bind(
            job_id=",".join(job["job_id"] for job in jobs),
            request_id=",".join(str(job.get("request_id")) for job in jobs),
        ).info("predict message {}: {}", self.request.id, summary)
        return summary

    @app.task(
        name=RETRAIN_TASK,
        bind=True,
        time_limit=worker.retrain_time_limit,
        soft_time_limit=worker.retrain_time_limit * 0.95,
    )
    def retrain(self) -> dict:
        def progress(step: str, percent: int) -> None:
            self.update_state(state="PROGRESS", meta={"step": step, "percent": percent})

        with logger.contextualize(job_id=self.request.id):
            return run_retrain(runtime(), self.request.id, progress)

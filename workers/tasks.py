"""Thin Celery tasks: each hands its message to a plain function (workers.batches, .retrain)."""

from __future__ import annotations

import redis
from billiard.exceptions import TimeLimitExceeded
from celery import Celery
from celery.exceptions import Ignore
from loguru import logger

from core.errors import ModelNotFound
from core.messages import MONITOR_TASK, PREDICT_TASK, RETRAIN_TASK
from core.redis import sync_client
from core.settings import Settings
from core.single_flight import MANUAL
from core.tracing import TRACEPARENT
from workers.batches import fail_unanswered, run_message
from workers.metrics import worker_metrics
from workers.retrain import AlreadyRunning, run_retrain
from workers.runtime import runtime


def _fail_open_jobs(settings: Settings):
    """``on_failure`` of the predict task: its message is acknowledged, so answer its jobs.

    Celery calls it in the pool child when the task raised, and in the main process when the
    child was killed at the hard time limit; a fresh client, since the main process has no
    runtime (and must not build one: its Redis connections would cross the next fork).
    """

    def on_failure(_task, exc, task_id, args, _kwargs, _einfo) -> None:
        jobs = args[0] if args and isinstance(args[0], list) else []
        if isinstance(exc, TimeLimitExceeded):
            reason = "time_limit"
            message = f"the prediction hit the {settings.worker.predict_time_limit}s time limit"
        else:
            reason, message = "task_failed", f"{type(exc).__name__}: {exc}"
        client = sync_client(settings.redis_url)
        try:
            failed = fail_unanswered(client, jobs, reason, message, settings.api.jobs_ttl_seconds)
        except redis.RedisError as error:  # the jobs expire with their records
            logger.error("predict message {} failed and Redis is unreachable: {}", task_id, error)
            return
        finally:
            client.close()
        logger.error("predict message {} failed ({}): {} job(s) FAILURE", task_id, exc, failed)

    return on_failure


def _predict_batch(task, rt, jobs: list[dict]) -> dict:
    ttl = rt.settings.api.jobs_ttl_seconds
    first = jobs[0] if jobs and isinstance(jobs[0], dict) else {}
    try:  # the gateway groups one model's jobs (and one pinned version) per message
        cache = rt.cache_for(first.get("model"))
    except ModelNotFound as exc:
        failed = fail_unanswered(rt.redis, jobs, exc.reason, exc.message, ttl)
        return {"jobs": len(jobs), "failed": failed, "reason": exc.reason}
    summary = run_message(
        rt.redis,
        cache,
        jobs,
        task_id=task.request.id,
        ttl=ttl,
        max_attempts=rt.settings.worker.max_retries_on_crash,
        redelivered=bool((task.request.delivery_info or {}).get("redelivered")),
        metrics=worker_metrics(),
        version=first.get("version"),
        tracer=rt.tracer,
        settings=rt.settings,
    )
    # One line per message (not per job: that would cost more than the prediction),
    # carrying every job's ids so one grep follows a prediction from the gateway.
    logger.bind(
        model=cache.store.model_name,
        job_id=",".join(job["job_id"] for job in jobs),
        request_id=",".join(str(job.get("request_id")) for job in jobs),
    ).info("predict message {}: {}", task.request.id, summary)
    return summary


def _retrain(task, rt, name: str, model: str | None, progress, trigger: dict) -> dict:
    with logger.contextualize(job_id=task.request.id, model=name):
        try:
            return worker_metrics().count_retrain(
                name, lambda: run_retrain(rt, task.request.id, progress, model=model, **trigger)
            )
        except AlreadyRunning as exc:
            # Leave the job's state to the run that is alive: no result, no FAILURE.
            logger.warning("{}: this delivery is dropped", exc)
            raise Ignore() from None


def register_tasks(app: Celery, settings: Settings) -> None:
    """Tasks of this app only (``shared=False``): by default Celery also registers them in every
    app created later, so a second ``create_app(settings)`` would run the first app's tasks,
    with the first settings' time limits."""
    worker = settings.worker

    @app.task(
        name=PREDICT_TASK,
        bind=True,
        shared=False,
        # Results go to the jobs' own keys (workers/batches.py); Celery's backend would only add
        # two more Redis writes per message.
        ignore_result=True,
        track_started=False,
        Request="workers.request:Request",  # its arguments reach the pool process once
        time_limit=worker.predict_time_limit,
        soft_time_limit=worker.predict_time_limit * 0.9,
        on_failure=_fail_open_jobs(settings),
    )
    def predict_batch(self, jobs: list[dict]) -> dict:
        rt = runtime()
        if rt.tracer is None:
            return _predict_batch(self, rt, jobs)
        # The message's span continues the gateway's enqueue (its traceparent header, the
        # convention Celery's own OpenTelemetry instrumentation reads too).
        with rt.tracer.span(
            f"process {(self.request.delivery_info or {}).get('routing_key') or 'predict'}",
            kind="consumer",
            parent=getattr(self.request, TRACEPARENT, None),
            attributes={
                "messaging.system": "celery",
                "messaging.message.id": str(self.request.id),
                "messaging.batch.message_count": len(jobs),
            },
        ):
            return _predict_batch(self, rt, jobs)

    @app.task(
        name=RETRAIN_TASK,
        bind=True,
        shared=False,
        time_limit=worker.retrain_time_limit,
        soft_time_limit=worker.retrain_time_limit * 0.95,
    )
    def retrain(
        self,
        model: str | None = None,
        trigger: str = MANUAL,
        trigger_detail: dict | None = None,
        force: bool = False,
    ) -> dict:
        def progress(step: str, percent: int, detail: str) -> None:
            meta = {"step": step, "percent": percent, "detail": detail}
            self.update_state(state="PROGRESS", meta=meta)

        rt = runtime()
        name = model or rt.settings.default_model
        detail = trigger_detail if isinstance(trigger_detail, dict) else None  # from a message
        why = {"trigger": str(trigger), "trigger_detail": detail, "force": bool(force)}
        if rt.tracer is None:
            return _retrain(self, rt, name, model, progress, why)
        with rt.tracer.span(
            "retrain",
            kind="consumer",
            parent=getattr(self.request, TRACEPARENT, None),
            attributes={"mlops.model": name, "mlops.job_id": str(self.request.id)},
        ):
            return _retrain(self, rt, name, model, progress, why)

    @app.task(
        name=MONITOR_TASK,
        shared=False,
        ignore_result=True,
        time_limit=worker.predict_time_limit,
        soft_time_limit=worker.predict_time_limit * 0.9,
    )
    def monitor_drift(model: str | None = None) -> dict:
        from workers.monitoring import run_monitoring  # numpy and scipy: when a check runs

        rt = runtime()
        name = model or rt.settings.default_model
        if name not in rt.settings.models:
            raise ModelNotFound(f"model {name!r} has no [models.{name}] table: not monitored")
        with logger.contextualize(model=name):
            result = run_monitoring(
                rt.redis,
                rt.cache_for(name).store,
                rt.settings.models[name].monitoring,
                rt.settings.api.jobs_ttl_seconds,
            )
        return {"status": result.status, "version": result.version}

"""One logging setup for gateway, workers and training.

Standard-library logging (Celery, uvicorn, kombu) is routed through loguru. Lines about a
request or job carry ``model``, ``request_id`` and ``job_id`` in ``extra`` (``logger.bind`` /
``logger.contextualize``), so one grep follows a prediction from gateway to worker.
"""

from __future__ import annotations

import inspect
import logging
import sys

from loguru import logger

from core.messages import PREDICT_TASK
from core.settings import Settings

TEXT_FORMAT = (
    "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> | <level>{level: <8}</level> | "
    "{extra[component]} | <cyan>{name}</cyan> - <level>{message}</level>{extra[ids]}"
)


# Library loggers whose DEBUG lines come per connection or per task and help nobody: redis-py's
# "Failed to enable maintenance notifications" on every new connection, Celery's
# "TaskPool: Apply" with the task's whole arguments (every row of every job), kombu's
# "pidbox received method enable_events()" every 5 s while Flower runs (`make run`).
QUIETER = ("redis", "celery.pool", "kombu.pidbox")


class SkipPredictTaskLines(logging.Filter):
    """Celery's "received" and "succeeded" lines of each predict message: the worker's own
    line for the message (workers/tasks.py) says as much, with the model and every job's id.
    Retrains keep theirs; failures are logged at ERROR by both and kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if record.levelno > logging.INFO or not isinstance(args, dict):
            return True
        return not str(args.get("name", "")).startswith(PREDICT_TASK)


SKIP_PREDICT_TASK_LINES = SkipPredictTaskLines()


class InterceptHandler(logging.Handler):
    """Send standard-library records to loguru (loguru's documented recipe)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        frame, depth = inspect.currentframe(), 0
        while frame and (depth == 0 or frame.f_code.co_filename == logging.__file__):
            frame = frame.f_back
            depth += 1
        logger.opt(depth=depth, exception=record.exc_info).log(level, record.getMessage())


def _ids(record) -> None:
    extra = record["extra"]
    parts = [f"{key}={extra[key]}" for key in ("model", "request_id", "job_id") if extra.get(key)]
    extra["ids"] = (" | " + " ".join(parts)) if parts else ""
    extra.setdefault("component", "-")


def setup_logging(settings: Settings, component: str) -> None:
    """Configure loguru for this process: JSON lines or readable text, per settings."""
    logger.remove()
    level = str(settings.logging.level).upper()
    if settings.logging.as_json:
        # request_id and job_id are already fields of record.extra: no "ids" text to build.
        logger.configure(extra={"component": component}, patcher=None)
        logger.add(sys.stderr, level=level, serialize=True, backtrace=False, diagnose=False)
    else:
        logger.configure(extra={"component": component, "ids": ""}, patcher=_ids)
        logger.add(sys.stderr, level=level, format=TEXT_FORMAT, backtrace=False, diagnose=False)
    # Standard-library loggers drop records below our level themselves: a record that loguru
    # would discard still costs a frame walk in InterceptHandler (Celery logs per task).
    std_level = logging.getLevelNamesMapping().get(level, logging.INFO)
    logging.basicConfig(handlers=[InterceptHandler()], level=std_level, force=True)
    for name in ("uvicorn", "uvicorn.error", "celery", "kombu", "fastapi"):
        std = logging.getLogger(name)
        std.handlers = [InterceptHandler()]
        std.propagate = False
        std.setLevel(std_level)
    for name in QUIETER:
        logging.getLogger(name).setLevel(max(std_level, logging.INFO))
    for name in ("celery.worker.strategy", "celery.app.trace"):
        logging.getLogger(name).addFilter(SKIP_PREDICT_TASK_LINES)  # once: same instance
    # uvicorn logs each request when this logger has handlers; that costs ~5 % of a request,
    # so access lines are on only at DEBUG (the gateway's metrics count every request).
    access = logging.getLogger("uvicorn.access")
    access.handlers = [InterceptHandler()] if level == "DEBUG" else []
    access.propagate = False

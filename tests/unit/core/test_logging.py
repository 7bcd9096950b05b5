"""core/logging.py at DEBUG (the development setting): our lines, not the libraries' per-request
and per-task repeats. In a fresh interpreter: setup_logging changes logging for the process."""

from __future__ import annotations

import os
import subprocess
import sys

from scripts.processes import ROOT

SCRIPT = r"""
import logging
from loguru import logger
from core.logging import setup_logging
from core.settings import get_settings

setup_logging(get_settings(), "worker")
logging.getLogger("redis.connection").debug("Failed to enable maintenance notifications")
logging.getLogger("celery.pool").debug("TaskPool: Apply <rows of every job>")
logging.getLogger("kombu.pidbox").debug("pidbox received method enable_events()")
strategy, trace = logging.getLogger("celery.worker.strategy"), logging.getLogger("celery.app.trace")
strategy.info("Task %(name)s[%(id)s] received", {"name": "mlops.predict_batch[iris]", "id": "p1"})
trace.info("Task %(name)s[%(id)s] succeeded", {"name": "mlops.predict_batch[iris]", "id": "p1"})
trace.error("Task %(name)s[%(id)s] raised", {"name": "mlops.predict_batch[iris]", "id": "p2"})
strategy.info("Task %(name)s[%(id)s] received", {"name": "mlops.retrain[iris]", "id": "r1"})
trace.info("Task %(name)s[%(id)s] succeeded", {"name": "mlops.retrain[iris]", "id": "r1"})
logging.getLogger("celery.worker.consumer").debug("a celery debug line")
logger.debug("our own debug line")
"""


def test_debug_keeps_ours_and_drops_the_libraries_per_request_repeats():
    env = {**os.environ, "MLOPS_ENV": "testing", "MLOPS_LOGGING__LEVEL": "DEBUG"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    logged = done.stderr
    assert "our own debug line" in logged and "a celery debug line" in logged
    assert "maintenance notifications" not in logged
    assert "TaskPool: Apply" not in logged
    assert "enable_events" not in logged  # Flower asks every 5 s
    assert "mlops.predict_batch[iris][p1]" not in logged  # received, succeeded: ours says it
    assert "mlops.predict_batch[iris][p2] raised" in logged  # failures stay
    assert "mlops.retrain[iris][r1] received" in logged
    assert "mlops.retrain[iris][r1] succeeded" in logged

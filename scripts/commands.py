"""The commands that run each part of the service.

`make run`, the integration tests and the containers (Dockerfile.*, docker-compose.yaml) all
run these same commands; a test checks that the container files agree with this module.
"""

from __future__ import annotations


def gateway(host: str, port: int) -> list[str]:
    # uvicorn with the connection limits of app/edge.py and the options of gateway.* settings.
    return ["python", "-m", "app", "--host", host, "--port", str(port)]


def worker(queues: str | None = None, concurrency: int | None = None) -> list[str]:
    """Every queue unless ``queues`` ("predict", "train") specialises the node."""
    args = ["celery", "-A", "workers", "worker", "--loglevel", "INFO"]
    if queues is not None:
        args += ["-Q", queues]
    if concurrency is not None:
        args += ["--concurrency", str(concurrency)]
    return args


def beat(schedule_file: str = "celerybeat-schedule") -> list[str]:
    return ["celery", "-A", "workers", "beat", "--schedule", schedule_file, "--loglevel", "INFO"]


def flower() -> list[str]:
    return ["celery", "-A", "workers", "flower"]

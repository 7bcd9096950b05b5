"""The Celery app of ``celery -A workers ...``: Celery looks for ``workers.celery:app``."""

from workers.celery_app import create_app

app = create_app()

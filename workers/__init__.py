"""Celery workers: ``celery -A workers worker``, ``celery -A workers beat``, ``... flower``."""

from workers.celery_app import create_app

app = create_app()

__all__ = ["app", "create_app"]

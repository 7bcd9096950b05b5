"""Celery workers: ``celery -A workers worker``, ``celery -A workers beat``, ``... flower``.

The app lives in ``workers/celery.py`` (where ``-A workers`` finds it); importing this package
or any other of its modules builds no app.
"""

"""The FastAPI gateway: HTTP only. It never imports scikit-learn, Celery or workers/."""

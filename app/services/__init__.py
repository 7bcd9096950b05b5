"""Plain async services behind the routes (and behind a future /v2 Open Inference Protocol)."""

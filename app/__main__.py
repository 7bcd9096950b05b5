"""``python -m app``: run the gateway (app/server.py)."""

from app.server import main

main()

"""Fixtures of the gateway's unit tests."""

from __future__ import annotations

import pytest
from loguru import logger


@pytest.fixture
def log_lines():
    """Lines logged by the gateway's modules."""
    lines: list = []
    sink = logger.add(
        lambda message: lines.append(message.record),
        level="DEBUG",
        filter=lambda record: record["name"].startswith("app."),
    )
    yield lines
    logger.remove(sink)

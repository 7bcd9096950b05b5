"""The pieces of app/edge.py that need no server. The connection limits themselves are tested
on the real server: tests/integration/test_edge.py."""

from __future__ import annotations

import asyncio

from app import edge


def test_refusals_are_logged_at_once_then_once_per_interval_with_the_count(log_lines):
    throttled = edge._Throttled("WARNING", "refused {count} ({limit})", every=0.2)

    async def burst():
        for _ in range(500):
            throttled(limit=7)
        await asyncio.sleep(0.3)  # the window closes: one line for the 499 held back
        await asyncio.sleep(0.3)  # a quiet window ends the throttling
        throttled(limit=7)

    asyncio.run(burst())
    assert [line["message"] for line in log_lines] == [
        "refused 1 (7)",
        "refused 499 (7)",
        "refused 1 (7)",
    ]

"""app/services/inference.py (target name dataplane.py): submit a job and await its result."""

from __future__ import annotations

import fakeredis

from app.metrics import GatewayMetrics
from app.services.dataplane import await_result
from app.services.listener import ResultListener
from app.services.submitter import JobSubmitter
from tests.factories import open_admission, run, samples, value


def test_a_sync_wait_that_ends_without_a_result_is_counted():
    async def scenario():
        client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
        metrics = GatewayMetrics()
        submitter = JobSubmitter(
            client, admission=open_admission(), max_rows=1, max_wait_ms=1, ttl=60, metrics=metrics
        )
        listener = ResultListener(client)
        future = listener.register("never-answered")
        result = await await_result(submitter, listener, "never-answered", future, 0.01)
        return result, metrics

    result, metrics = run(scenario())
    assert result is None
    assert value(samples(metrics.exposition()), "mlops_sync_wait_timeouts_total") == 1

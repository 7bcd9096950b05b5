"""benchmarks/report.py: the rows of what tracing and waiting for a replica cost."""

from __future__ import annotations

from benchmarks.report import costs_table


def point(rps, gateway_us, worker_us=300.0, redis_us=50.0, replica_us=0.0, errors=0):
    us = {"gateway": gateway_us, "worker main": worker_us / 3, "worker pool": worker_us * 2 / 3}
    us["redis"] = redis_us
    if replica_us:
        us["redis replica"] = replica_us
    return {"rps": rps, "p50_ms": 10.0, "p99_ms": 20.0, "errors": errors, "cpu_us_per_request": us}


def results():
    return {
        "tracing": {
            "off": point(1000, 400),
            "on": {
                **point(800, 600),
                "spans_received": {"mlops-gateway": 14000, "mlops-worker": 10000},
                "exports": 12,
                "spans_dropped": 0.0,
            },
            "span_cost": {"gateway_us": 120.0, "worker_us": 210.0},
        },
        "replica_ack": {
            "replica_ack_ms": 500,
            "sync_ack_0": point(1000, 400, replica_us=20),
            "sync_ack_500": point(500, 420, replica_us=20, errors=3),
            "async_ack_0": point(3000, 200, replica_us=20),
            "async_ack_500": point(2400, 220, replica_us=20),
        },
    }


def test_each_option_is_set_against_the_same_load_without_it():
    text = "\n".join(costs_table(results()))
    assert "| sync, tracing off (as shipped) | 1,000 | 10.00 | 20.00 | 400 | 300 | 50 | — |" in text
    assert "| 800 | 10.00 | 20.00 | 600 | 300 | 50 | 0.80x req/s, 1.50x gateway CPU |" in text
    # Redis counts the primary and the replica; errors are shown
    assert "| sync, `replica_ack_ms = 500` | 500 (3 errors) |" in text
    assert "| 420 | 300 | 70 | 0.50x req/s, 1.05x gateway CPU |" in text
    assert "| 2,400 | 10.00 | 20.00 | 220 | 300 | 70 | 0.80x req/s, 1.10x gateway CPU |" in text
    assert (
        "14,000 spans of mlops-gateway and 10,000 spans of mlops-worker reached the receiver "
        "in 12 OTLP requests (0 dropped)" in text
    )
    assert "120 µs of gateway CPU per sync predict and 210 µs" in text


def test_a_run_without_these_figures_has_no_such_table():
    assert costs_table({}) == []

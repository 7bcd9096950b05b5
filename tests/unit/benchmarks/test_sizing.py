"""benchmarks/sizing.py: the scaling mode's tables and sizing rule, from made-up points."""

from __future__ import annotations

import pytest

from benchmarks.cpu import LOAD_GENERATOR, REST
from benchmarks.sizing import cores_busy, markdown, processes_for, sizing

MACHINE = {"date": "today", "cpu": "a CPU", "cores": 2, "python": "3.11"}


def point(mode, pool, gateways, rps, gateway_us, worker_us, redis_us=50.0, requests=1000):
    return {
        "mode": mode,
        "pool_processes": pool,
        "gateway_processes": gateways,
        "rps": rps,
        "p50_ms": 10.0,
        "p99_ms": 20.0,
        "errors": 0,
        "requests": requests,
        "window_s": 2.0,
        "cpu_s": {
            "gateway": 0.8,
            "redis": 0.2,
            "worker main": 0.1,
            "worker pool": 0.5,
            LOAD_GENERATOR: 0.6,
            REST: 1.0,
            "wall x cores": 4.0,
        },
        "cpu_us_per_request": {
            "gateway": gateway_us,
            "redis": redis_us,
            "worker main": worker_us / 4,
            "worker pool": worker_us * 3 / 4,
        },
    }


def test_each_role_gets_the_median_cpu_per_request_and_what_one_core_serves():
    points = [
        point("sync", 1, 1, 1000, gateway_us=400, worker_us=200),
        point("sync", 2, 1, 1100, gateway_us=500, worker_us=240),
        point("sync", 4, 1, 900, gateway_us=800, worker_us=400),
        point("async", 1, 1, 3000, gateway_us=200, worker_us=100),
    ]
    rule = sizing(points)
    assert rule["sync"]["gateway"] == {
        "us_per_request": 500,
        "min_us": 400,
        "max_us": 800,
        "requests_per_cpu_second": 2000,
    }
    assert rule["sync"]["worker"]["us_per_request"] == 240  # main + pool
    assert rule["sync"]["service"] == {"us_per_request": 790, "requests_per_cpu_second": 1266}
    assert rule["async"]["gateway"]["requests_per_cpu_second"] == 5000
    # the main process's share of the median worker: 240 / 4 = 60 µs, one core = 16,667/s
    assert rule["sync"]["node_ceiling_rps"] == 16667


def test_a_mode_without_points_or_requests_is_left_out():
    rule = sizing([point("sync", 1, 1, 0, 400, 200, requests=0)])
    assert rule == {}


@pytest.mark.parametrize(
    ("rate", "us", "expected"),
    [(1000, 700, 1), (1000, 701, 2), (0, 500, 1), (10000, 350, 5)],
)
def test_processes_for_a_rate_keep_each_below_the_headroom(rate, us, expected):
    assert processes_for(rate, us) == expected


def test_cores_busy_splits_the_machine_between_the_service_the_load_and_the_rest():
    cores = cores_busy(point("sync", 1, 1, 1000, 400, 200))
    assert cores == pytest.approx(
        {"service": 0.8, "load generator": 0.3, "other": 0.5, "machine busy": 0.8}
    )


def test_the_report_has_a_row_per_size_its_ratio_to_the_smallest_and_the_rule():
    points = [
        point("sync", 1, 1, 1000, 400, 200),
        point("async", 1, 1, 3000, 200, 100),
        point("sync", 2, 1, 1500, 400, 200),
        point("sync", 2, 2, 500, 400, 200),
    ]
    results = {
        "points": points,
        "machine": MACHINE,
        "load_generator": "wrk",
        "seconds_per_point": 6.0,
        "connections": 16,
        "sizing": sizing(points),
    }
    text = markdown(results)
    assert "| 1 | 1 | 1,000 | 10.0 / 20.0 | 3,000 | 10.0 / 20.0 | 1.00x / 1.00x |" in text
    assert "| 2 | 1 | 1,500 | 10.0 / 20.0 | — | — | 1.50x / — |" in text
    assert "| 2 | 2 | 500 |" in text and "0.50x / — |" in text
    assert "| sync | gateway | 400; 400 to 400 | 2,500 |" in text
    assert "**Not linear here.**" in text
    assert "For 1,000 requests/s: 1 gateway process(es) and 1 worker core(s)." in text
    assert "about 20,000 requests/s per node whatever its pool" in text  # 1e6 / (200 / 4)

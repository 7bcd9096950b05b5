"""benchmarks/report.py: the whole report, its first targets, and the rows of what tracing and
waiting for a replica cost."""

from __future__ import annotations

from benchmarks import versus
from benchmarks.noise import combine
from benchmarks.report import costs_table, evaluate, markdown


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


def mode_point(*rps, p50=5.0, p99=12.0):
    runs = [{"rps": r, "p50_ms": p50, "p99_ms": p99, "cpu_us": 400.0, "requests": 1} for r in rps]
    return combine(runs)


def whole_run(peer: bool = True) -> dict:
    """A run's results as benchmarks/run.py leaves them, three rounds."""
    every = {1: mode_point(100, 100, 100, p50=1.0), 16: mode_point(1000, 1000, 1000)}
    modes = {name: dict(every) for name in ("echo", "inprocess", "v2", "async")}
    # sync: 3x, 1.5x and 2.5x in-process in the three rounds
    modes["sync"] = {1: every[1], 16: mode_point(3000, 1500, 2500)}
    modes["forest_inprocess"] = {16: mode_point(100, 100, 100)}
    modes["forest_sync"] = {16: mode_point(400, 400, 400)}
    if peer:
        modes["mlserver"] = dict(every)
        modes["forest_mlserver"] = {16: mode_point(200, 200, 200)}
    batch = combine([{"rps": r, "rows_per_s": r * 1000, "p50_ms": 30.0} for r in (150, 250, 200)])
    data = {
        **results(),
        "runs": 3,
        "modes": modes,
        "peer": {"name": "MLServer 1.7.1", "available": peer, "reason": None if peer else "offline",
                 "max_batch_size": 16, "max_batch_time_ms": 2.0, "parallel_workers": 1},
        "batch_1000": batch,
        "v2_batch_1000": batch,
        "drain": {"jobs_per_s": 20000.0, "jobs": 20000, "messages": 400},
        "drain_one_per_message": {"jobs_per_s": 500.0},
        "gateway_peak_rss_mb": 80.0, "worker_peak_rss_mb": 300.0, "inprocess_rss_mb": 120.0,
        "gateway_imports_sklearn": False,
        "machine": {"date": "today", "cpu": "cpu", "cores": 2, "python": "3.11"},
        "load_generator": "wrk", "seconds_per_point": 4.0, "worker_concurrency": 2,
        "duration_s": 600,
    }  # fmt: skip
    if peer:
        data["mlserver_peak_rss_mb"] = 250.0
        data["forest_inprocess_rss_mb"] = 130.0
    data["targets"] = evaluate(data)
    data["targets_16"] = versus.evaluate(data)
    return data


def test_the_first_issues_ratios_are_medians_of_ratios_within_each_round():
    rows = {t["target"]: t for t in whole_run()["targets"]}
    assert rows["sync throughput >= 2x in-process"]["value"] == "2.50x"
    assert rows["sync throughput >= 2x in-process"]["met"] is True
    assert rows["batches of 1000 >= 200,000 rows/s"]["value"] == "200,000 rows/s"


def test_the_whole_report_shows_spreads_the_peer_and_both_issues_targets():
    text = markdown(whole_run())
    assert "median of 3 round(s)" in text and "took 10.0 min" in text
    assert "| **this service, sync** `POST /predict?wait=` | 2,500 (1,500-3,000) |" in text
    assert "| MLServer 1.7.1, V2 infer (peer) | 1,000 (1,000-1,000) |" in text
    assert "| target (#15) | measured | met |" in text
    assert "| target (#16) | measured: median ratio (runs' spread) | met |" in text
    assert "200,000 (150,000-250,000) rows/s" in text
    assert (
        "| peak RSS: MLServer (all processes) / in-process forest server | 250.0 / 130.0 MiB |"
        in text
    )


def test_the_whole_report_without_the_peer_still_renders():
    text = markdown(whole_run(peer=False))
    assert "**MLServer 1.7.1 was not measured**: offline." in text
    assert "(peer)" not in text


def test_the_machines_wake_up_penalty_is_reported_when_measured():
    data = whole_run()
    assert "wake-up penalty" not in markdown(data)  # older results have none
    data["machine"]["wake_penalty"] = {
        "back_to_back_us": 350.0,
        "after_idle_us": 1050.0,
        "ratio": 3.0,
    }
    text = markdown(data)
    assert "takes 1050 µs after 5 ms asleep against 350 µs back to back (3.0x)" in text


def test_the_wake_up_probe_times_both_ways_in_a_fresh_interpreter():
    from benchmarks.run import wake_penalty

    wake = wake_penalty()
    assert wake["back_to_back_us"] > 0 and wake["after_idle_us"] > 0
    assert wake["ratio"] == wake["after_idle_us"] / wake["back_to_back_us"]

"""benchmarks/versus.py: issue #16's targets and the table beside MLServer."""

from __future__ import annotations

from benchmarks.noise import combine
from benchmarks.versus import evaluate, spread, table


def point(*rps, p50=5.0, p99=20.0, cpu=500.0) -> dict:
    """A point of one run per throughput given, other figures the same in every run."""
    return combine(
        [{"rps": r, "p50_ms": p50, "p99_ms": p99, "cpu_us": cpu, "requests": 1} for r in rps]
    )


def results(peer: bool = True) -> dict:
    modes = {
        "echo": {16: point(3000, 3000, 3000)},
        "inprocess": {16: point(900, 1000, 1100), 1: point(800, 800, 800, p50=1.0)},
        "sync": {
            16: point(3000, 2000, 1500, p99=15.0, cpu=300.0),
            1: point(300, 300, 300, p50=1.4),
        },
        "async": {16: point(2000, 2400, 1800)},
        "forest_inprocess": {16: point(100, 100, 100)},
        "forest_sync": {16: point(350, 250, 320)},
    }
    if peer:
        modes["mlserver"] = {16: point(1000, 2000, 1000, p99=30.0, cpu=500.0)}
        modes["forest_mlserver"] = {16: point(200, 200, 200)}
    offline = "MLServer 1.7.1 could not be installed: ERROR: offline"
    facts = {"name": "MLServer 1.7.1", "available": peer, "max_batch_size": 16,
             "max_batch_time_ms": 2.0, "parallel_workers": 1,
             "reason": None if peer else offline}  # fmt: skip
    return {"modes": modes, "peer": facts, "runs": 3}


def by_title(rows: list[dict]) -> dict[str, dict]:
    return {
        row["target"].split(":")[0] if ":" in row["target"] else row["target"]: row for row in rows
    }


def test_each_target_is_the_median_of_the_ratios_within_each_run():
    rows = {row["target"]: row for row in evaluate(results())}
    throughput = rows["sync throughput >= 1.5x MLServer's"]
    # runs: 3000/1000, 2000/2000, 1500/1000 -> 3.0, 1.0, 1.5: median 1.5 (ratio of medians: 1.0)
    assert throughput["value"] == "1.50x (1.00-3.00x): 2,000 req/s vs 1,000 req/s"
    assert throughput["met"] is True
    assert rows["sync p99 <= MLServer's p99"]["met"] is True  # 15 vs 30 ms
    cpu = rows[
        "sync CPU per request (all service processes) <= 0.7x MLServer's (all its processes)"
    ]
    assert cpu["value"].startswith("0.60x") and cpu["met"] is True
    one = rows["one connection: sync p50 <= 1.5x in-process p50"]
    assert one["value"] == "1.40x (1.40-1.40x): 1.40 ms vs 1.00 ms" and one["met"] is True
    # 3.5, 2.5, 3.2 -> 3.2 >= 3
    assert rows["random forest: sync throughput >= 3x in-process"]["met"] is True
    # 1.75, 1.25, 1.6 -> 1.6 >= 1.5
    assert rows["random forest: sync throughput >= 1.5x MLServer's"]["met"] is True
    # 0.67, 0.8, 0.6 -> 0.67 < 0.7
    assert rows["async submit >= 0.7x echo"]["met"] is False


def test_a_target_short_of_its_limit_is_not_met():
    slow = results()
    slow["modes"]["sync"][16] = point(1200, 1200, 1200, p99=40.0, cpu=400.0)
    rows = {row["target"]: row for row in evaluate(slow)}
    assert rows["sync throughput >= 1.5x MLServer's"]["met"] is False
    assert rows["sync p99 <= MLServer's p99"]["met"] is False
    cpu = rows[
        "sync CPU per request (all service processes) <= 0.7x MLServer's (all its processes)"
    ]
    assert cpu["met"] is False  # 0.8x


def test_without_the_peer_its_targets_say_why_and_count_neither_way():
    rows = {row["target"]: row for row in evaluate(results(peer=False))}
    peer_rows = [r for title, r in rows.items() if "MLServer" in title]
    assert len(peer_rows) == 4
    for row in peer_rows:
        assert row["met"] is None
        assert row["value"] == "not measured: MLServer 1.7.1 could not be installed: ERROR: offline"
    assert rows["random forest: sync throughput >= 3x in-process"]["met"] is True


def test_the_table_shows_medians_with_their_spread_and_the_targets():
    data = results()
    data["targets_16"] = evaluate(data)
    text = "\n".join(table(data))
    assert "### Beside MLServer 1.7.1" in text
    assert "adaptive batching of 16 requests / 2 ms and 1 inference process(es)" in text
    assert (
        "| iris | MLServer 1.7.1, V2 infer | 16 | 1,000 (1,000-2,000) | 5.00 (5.00-5.00) |" in text
    )
    assert "| 200-tree forest | this service, sync | 16 | 320 (250-350) |" in text
    assert "| sync throughput >= 1.5x MLServer's | 1.50x (1.00-3.00x): 2,000 req/s vs 1,000" in text
    assert "| async submit >= 0.7x echo |" in text and "| **no** |" in text
    # a point that was not measured has no row
    assert "| iris | MLServer 1.7.1, V2 infer | 1 |" not in text


def test_the_table_without_the_peer_says_why():
    data = results(peer=False)
    data["targets_16"] = evaluate(data)
    text = "\n".join(table(data))
    assert "**MLServer 1.7.1 was not measured**: MLServer 1.7.1 could not be installed" in text
    assert "MLServer 1.7.1, V2 infer |" not in text
    assert "| — |" in text  # its targets: neither met nor failed


def test_one_run_has_no_spread():
    assert spread(point(1234.4), "rps") == "1,234"
    assert spread(point(1000, 3000), "rps") == "2,000 (1,000-3,000)"
    assert spread(point(1000, 3000, p50=1.234), "p50_ms", 2) == "1.23 (1.23-1.23)"

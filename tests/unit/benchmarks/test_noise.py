"""benchmarks/noise.py: medians of runs, their spread, ratios within each run."""

from __future__ import annotations

import pytest

from benchmarks.noise import combine, ratios, summary


def run(rps, p50, p99, cpu, gateway=None):
    us = {"gateway": gateway if gateway is not None else cpu / 2, "redis": cpu / 2}
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "cpu_us": cpu, "requests": int(rps * 4),
            "errors": 0, "cpu_us_per_request": us, "label": "x", "ok": True}  # fmt: skip


def test_summary_is_the_median_and_the_extremes():
    assert summary([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0}
    assert summary([4.0, 1.0]) == {"median": 2.5, "min": 1.0, "max": 4.0}


def test_a_combined_point_holds_each_fields_median_its_spread_and_the_runs():
    runs = [run(1000, 8.0, 20.0, 600), run(1500, 6.0, 30.0, 500), run(900, 9.0, 18.0, 700)]
    point = combine(runs)
    assert (point["rps"], point["p50_ms"], point["p99_ms"], point["cpu_us"]) == (
        1000,
        8.0,
        20.0,
        600,
    )
    assert point["spread"] == {
        "rps": [900, 1500], "p50_ms": [6.0, 9.0], "p99_ms": [18.0, 30.0], "cpu_us": [500, 700]
    }  # fmt: skip
    assert point["runs"] == runs
    # each part's median on its own: not necessarily from the same run as the total's
    assert point["cpu_us_per_request"] == {"gateway": 300.0, "redis": 300.0}
    # text and flags are not figures
    assert "label" not in point and "ok" not in point


def test_a_part_missing_from_a_run_counts_as_zero_there():
    runs = [run(1000, 8.0, 20.0, 600), run(1000, 8.0, 20.0, 600)]
    runs[1]["cpu_us_per_request"]["replica"] = 40.0
    assert combine(runs)["cpu_us_per_request"]["replica"] == 20.0


def test_a_field_not_in_every_run_is_left_out():
    runs = [run(1000, 8.0, 20.0, 600), run(1000, 8.0, 20.0, 600)]
    runs[0]["rows_per_s"] = 5.0
    assert "rows_per_s" not in combine(runs)


def test_nothing_to_combine_is_an_error():
    with pytest.raises(ValueError):
        combine([])


def test_ratios_pair_the_runs_of_two_points_by_position():
    a = combine([run(2000, 5, 10, 400), run(1000, 5, 10, 400), run(3000, 5, 10, 400)])
    b = combine([run(1000, 5, 10, 800), run(1000, 5, 10, 200), run(1000, 5, 10, 400)])
    assert ratios(a, b, "rps") == [2.0, 1.0, 3.0]
    assert ratios(a, b, "cpu_us") == [0.5, 2.0, 1.0]
    # the median of ratios is not the ratio of medians (2000 / 1000 here)
    assert summary(ratios(a, b, "rps"))["median"] == 2.0


def test_ratios_of_single_points_and_of_a_zero():
    assert ratios({"rps": 30.0}, {"rps": 10.0}, "rps") == [3.0]
    assert ratios({"rps": 30.0}, {"rps": 0.0}, "rps") == [float("inf")]


def test_runs_of_different_counts_cannot_be_paired():
    a = combine([run(1000, 5, 10, 400), run(1000, 5, 10, 400)])
    b = combine([run(1000, 5, 10, 400)])
    with pytest.raises(ValueError):
        ratios(a, b, "rps")

"""training/terminal.py: the step printer and the aligned table, on captured text."""

from __future__ import annotations

import io

from training.terminal import StepPrinter, table, when


def test_step_printer_writes_each_step_with_its_percent_time_and_detail():
    ticks = iter([100.0, 100.0, 102.25, 163.5])
    out = io.StringIO()
    printer = StepPrinter(out, clock=lambda: next(ticks))
    printer("loading data", 5, "")
    printer("fitting", 25, "LogisticRegression on 120 rows")
    printer("done", 100, "v3 promoted")
    assert out.getvalue().splitlines() == [
        "[  5%     0.0s] loading data",
        "[ 25%     2.2s] fitting: LogisticRegression on 120 rows",
        "[100%    63.5s] done: v3 promoted",
    ]


def test_table_columns_are_as_wide_as_their_widest_cell():
    lines = table(
        ["VERSION", "ACCURACY", "TRAINER"],
        [["1", "0.9", "iris"], ["12", "0.9667", "a-long-trainer-name"]],
        right=1,
    )
    assert lines == [
        "VERSION  ACCURACY  TRAINER",
        "1             0.9  iris",
        "12         0.9667  a-long-trainer-name",
    ]


def test_when_shortens_iso_timestamps_and_keeps_anything_else():
    assert when("2026-12-01T03:56:12.123456+00:00") == "2026-12-01 03:56:12"
    assert when("yesterday") == "yesterday"

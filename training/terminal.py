"""What ``python -m training`` shows a person: training steps as they go, aligned tables."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TextIO


class StepPrinter:
    """A training progress callback (training/pipeline.py ``Progress``) that writes each step
    as it starts, with the time since the run began::

        [ 25%    0.4s] fitting: LogisticRegression on 120 rows
    """

    def __init__(self, stream: TextIO, clock: Callable[[], float] = time.monotonic):
        self.stream = stream
        self.clock = clock
        self.started = clock()

    def __call__(self, step: str, percent: int, detail: str = "") -> None:
        elapsed = self.clock() - self.started
        text = f"{step}: {detail}" if detail else step
        self.stream.write(f"[{percent:>3}% {elapsed:7.1f}s] {text}\n")
        self.stream.flush()


def table(header: Sequence[str], rows: Sequence[Sequence[str]], right: int = -1) -> list[str]:
    """Lines of columns as wide as their widest cell, two spaces apart; column ``right``
    (a number, say) is right-aligned."""
    widths = [max(map(len, column)) for column in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = (
            cell.rjust(width) if i == right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )
        return "  ".join(padded).rstrip()

    return [line(header), *map(line, rows)]


def when(iso: str) -> str:
    """An ISO timestamp to the second (``2026-01-02 03:04:05``), or as given if it is not one."""
    try:
        return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return iso

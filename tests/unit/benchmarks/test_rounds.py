"""benchmarks/rounds.py: a round goes level by level, every mode of a level back to back, in
the modes' order and reversed in every other round."""

from __future__ import annotations

from benchmarks.rounds import Mode, measure


class Recorder:
    """A Bench that records which point it was asked for, in order."""

    def __init__(self):
        self.asked: list[tuple[str, int]] = []

    def log(self, text: str) -> None:
        pass

    def warmed(self, mode: Mode, connections: int) -> dict:
        self.asked.append((mode.name, connections))
        return {"rps": float(len(self.asked)), "requests": 1}


def mode(name: str, levels: list[int], rows: int = 1) -> Mode:
    return Mode(name, "http://x", b"{}", {}, levels, rows)


def test_the_sides_of_a_ratio_are_measured_back_to_back_and_the_order_turns():
    bench = Recorder()
    modes = [mode("echo", [1, 16]), mode("sync", [1, 16]), mode("batch", [4], rows=1000)]
    measured = measure(bench, modes, runs=2)
    assert bench.asked == [
        ("echo", 1), ("sync", 1), ("batch", 4), ("echo", 16), ("sync", 16),
        ("sync", 1), ("echo", 1), ("batch", 4), ("sync", 16), ("echo", 16),
    ]  # fmt: skip
    assert [run["rps"] for run in measured["echo"][16]["runs"]] == [4.0, 10.0]
    assert measured["batch"][4]["rows_per_s"] == 1000 * (3.0 + 8.0) / 2

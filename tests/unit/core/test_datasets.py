"""core/datasets.py: logs and labels move from Redis to the store's dated files, on both
backends, once; the flush lock lets one flusher at a time."""

from __future__ import annotations

import orjson
import pytest

from core import datasets
from core.datasets import FlushLock, flush_labels, flush_predictions, read_feedback
from core.feedback import labels_key
from core.prediction_log import flushed_key, stream_key
from core.store import ModelStore
from tests.factories import label_prediction, log_prediction, s3_store, store_at


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> ModelStore:
    if request.param == "local":
        return store_at(tmp_path / "store", "iris")
    endpoint, bucket = request.getfixturevalue("s3_server"), request.getfixturevalue("s3_bucket")
    return s3_store(endpoint, f"s3://{bucket}/models", "iris")


def lines(store: ModelStore, prefix: str) -> list[dict]:
    return [
        orjson.loads(line)
        for path in store.list_data(prefix)
        for line in store.read_data(path).splitlines()
    ]


def test_predictions_are_written_once_in_dated_files(redis_client, store):
    for i in range(5):
        log_prediction(redis_client, f"j{i}", [[float(i), 1.0]], ["setosa"], request=f"r{i}")
    assert flush_predictions(redis_client, store, batch=2) == 5
    paths = store.list_data("predictions/")
    assert len(paths) == 3  # batches of 2, 2, 1
    assert all(p.startswith("predictions/20") and p.endswith(".jsonl") for p in paths)
    written = lines(store, "predictions/")
    assert [e["job"] for e in written] == [f"j{i}" for i in range(5)]
    assert written[2]["rows"] == [[2.0, 1.0]] and written[2]["request"] == "r2"
    assert "owner" not in written[0]  # the API key's digest is not data
    # the log stays in Redis (drift and feedback read it); only the cursor moved
    assert redis_client.xlen(stream_key("iris")) == 5
    assert redis_client.get(flushed_key("iris")) is not None
    assert flush_predictions(redis_client, store, batch=2) == 0
    log_prediction(redis_client, "j5", [[5.0, 1.0]], ["setosa"])
    assert flush_predictions(redis_client, store, batch=2) == 1


def test_labels_move_to_the_store_and_leave_redis(redis_client, store):
    log_prediction(redis_client, "a", [[1.0, 2.0]], ["setosa"])
    log_prediction(redis_client, "b", [[3.0, 4.0], [5.0, 6.0]], ["setosa", "virginica"])
    label_prediction(redis_client, "a", "versicolor")
    label_prediction(redis_client, "b", ["setosa", "setosa"])
    moved = flush_labels(redis_client, store, batch=10)
    assert [e["job"] for e in moved] == ["a", "b"]
    assert redis_client.xlen(labels_key("iris")) == 0
    feedback = read_feedback(store)
    assert [(e["job"], e["label"], e["rows"]) for e in feedback] == [
        ("a", "versicolor", [[1.0, 2.0]]),
        ("b", ["setosa", "setosa"], [[3.0, 4.0], [5.0, 6.0]]),
    ]
    assert flush_labels(redis_client, store, batch=10) == []


def test_a_flush_repeated_after_a_crash_keeps_each_job_once(redis_client, store):
    """A flusher that died after writing a file and before trimming Redis writes the same
    labels again (with newer ones): the data set still has each job once."""
    log_prediction(redis_client, "a", [[1.0]], ["x"])
    log_prediction(redis_client, "b", [[2.0]], ["x"])
    label_prediction(redis_client, "a", "x")
    assert len(flush_labels(redis_client, store, batch=10)) == 1
    redis_client.xadd(labels_key("iris"), {
        "job": "a", "label": b'"x"', "request": "", "version": 1, "time": 200.0,
        "rows": b"[[1.0]]", "outputs": b'["x"]'})  # fmt: skip
    label_prediction(redis_client, "b", "x")
    flush_labels(redis_client, store, batch=10)
    assert len(store.list_data("feedback/")) == 2
    assert [e["job"] for e in read_feedback(store)] == ["a", "b"]


def test_one_flusher_at_a_time(redis_client):
    first, second = FlushLock(redis_client, "iris"), FlushLock(redis_client, "iris")
    with first.held() as taken:
        assert taken
        with second.held() as also:
            assert not also
    with second.held() as now:
        assert now
    assert FlushLock(redis_client, "other").acquire()  # per model


def test_a_file_gathers_several_reads_and_ends_at_its_size(redis_client, tmp_path, monkeypatch):
    """Entries are read a few at a time (no large reply); a file still holds ``batch`` of
    them, or fewer once it reaches FILE_BYTES."""
    store = store_at(tmp_path / "store", "iris")

    def files() -> list[list[bytes]]:
        """Each file's lines, in the order of their first entries (ids, not names: the
        names of two files of one millisecond compare "-10" before "-9")."""

        def first_entry(path: str) -> tuple[int, int]:
            ms, seq = path.rsplit("/", 1)[1].split("_")[0].split("-")
            return int(ms), int(seq)

        paths = sorted(store.list_data("predictions/"), key=first_entry)
        return [store.read_data(path).splitlines() for path in paths]

    monkeypatch.setattr(datasets, "READ_CHUNK", 2)
    for i in range(7):
        log_prediction(redis_client, f"j{i}", [[float(i), 1.0]], ["setosa"])
    assert flush_predictions(redis_client, store, batch=5) == 7
    assert [len(file) for file in files()] == [5, 2]
    size = len(files()[0][0]) + 1  # one entry's line
    monkeypatch.setattr(datasets, "FILE_BYTES", 3 * size)
    for i in range(7, 14):
        log_prediction(redis_client, f"j{i}", [[float(i), 1.0]], ["setosa"])
    assert flush_predictions(redis_client, store, batch=5) == 7
    written = files()
    assert [len(file) for file in written] == [5, 2, 4, 3]  # two reads of 2 reach the size
    jobs = [orjson.loads(line)["job"] for file in written for line in file]
    assert jobs == [f"j{i}" for i in range(14)]

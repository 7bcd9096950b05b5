"""core/prediction_log.py: the entries' shape (one per message), the cap, and the indexes trimmed
with the stream."""

from __future__ import annotations

import orjson
import pytest

from core import prediction_log
from core.prediction_log import (
    INDEX_CHUNK,
    data_lines,
    decode_message,
    index_key,
    index_new,
    job_member,
    labelled_key,
    read_lines,
    read_recent,
    request_member,
    stream_key,
    trim_index,
)
from core.prediction_log import append as append_to


def append(client, jobs, max_entries=1000, model="iris", at=1000.0):
    """One message's ``jobs`` (:func:`job`), as a worker logs them."""
    append_to(client, model, 3, at, jobs, max_entries)


def job(i: int, request: str | None = None, owner: str = "k1") -> tuple:
    return (f"job-{i}", request, owner, [[float(i), 1.5]], [f"c{i}"])


def test_read_recent_decodes_the_jobs_of_the_last_entries_newest_last(redis_client):
    for i in range(5):
        append(redis_client, [job(i, request=f"r{i}")], at=1000.0 + i)
    recent = read_recent(redis_client, "iris", 3)
    assert [e["job"] for e in recent] == ["job-2", "job-3", "job-4"]
    last = recent[-1]
    assert last["request"] == "r4" and last["owner"] == "k1"
    assert last["version"] == 3 and last["time"] == 1004.0
    assert last["rows"] == [[4.0, 1.5]] and last["outputs"] == ["c4"]
    assert read_recent(redis_client, "other", 3) == []


def test_one_entry_holds_every_job_of_a_message_in_order(redis_client):
    append(redis_client, [job(0, request="a"), job(1), job(2, owner="")])
    assert redis_client.xlen(stream_key("iris")) == 1
    [(entry_id, _)] = redis_client.xrange(stream_key("iris"))
    jobs = read_recent(redis_client, "iris", 1)
    assert [
        (e["id"], e["job"], e["request"], e["owner"], e["rows"], e["outputs"]) for e in jobs
    ] == [
        (entry_id.decode(), "job-0", "a", "k1", [[0.0, 1.5]], ["c0"]),
        (entry_id.decode(), "job-1", "", "k1", [[1.0, 1.5]], ["c1"]),
        (entry_id.decode(), "job-2", "", "", [[2.0, 1.5]], ["c2"]),
    ]


def test_entries_carry_exactly_the_fixed_fields(redis_client):
    """The drift monitor codes against these names (and feedback's Lua against ``jobs``,
    ``requests`` and ``owners``)."""
    append(redis_client, [job(0)])
    [(_, fields)] = redis_client.xrange(stream_key("iris"))
    assert {k.decode() for k in fields} == {
        "jobs", "requests", "owners", "version", "time", "rows", "outputs"
    }  # fmt: skip


def test_read_lines_resumes_after_an_id(redis_client):
    for i in range(4):
        append(redis_client, [job(i)])
    first = read_lines(redis_client, "iris", None, 2)
    rest = read_lines(redis_client, "iris", first[-1][0], 10)
    assert [jobs for _, jobs, _ in first + rest] == [1, 1, 1, 1]
    lines = b"".join(text for _, _, text in first + rest).splitlines()
    assert [orjson.loads(line)["job"] for line in lines] == [f"job-{i}" for i in range(4)]


@pytest.mark.parametrize("size", [1, 3], ids=["one job, its rows copied", "three jobs"])
def test_data_lines_are_the_decoded_jobs_without_owner_byte_for_byte(redis_client, size):
    """The flush copies a one-job entry's rows without parsing them: its lines must be what
    encoding the decoded jobs gives (the lines written before), for any values."""
    rows = [[0.1 * i, -2.5e-7, 3, 1e22] for i in range(50)]
    jobs = [(f"j{i}", f"r{i}" if i else None, "k1", rows[i:], ["é", i, None]) for i in range(size)]
    append(redis_client, jobs, at=1700000000.123456)
    [(entry_id, fields)] = redis_client.xrange(stream_key("iris"))
    expected = b"".join(
        orjson.dumps({k: v for k, v in job.items() if k != "owner"}) + b"\n"
        for job in decode_message(entry_id, fields)
    )
    [(ident, count, text)] = read_lines(redis_client, "iris", None, 10)
    assert (ident, count, text) == (entry_id.decode(), size, expected)


def test_data_lines_of_an_entry_without_jobs_are_none_and_a_bad_column_is_refused():
    """An entry with no job lists yields nothing (as decoding it does); a one-job entry whose
    rows are not a one-item list raises rather than writing a broken line."""
    assert data_lines(b"1-0", {b"version": b"1", b"time": b"2.0"}) == (0, b"")
    fields = {b"jobs": b'["j"]', b"requests": b'[""]', b"rows": b"[]", b"outputs": b'[["x"]]'}
    with pytest.raises(ValueError, match="one item"):
        data_lines(b"1-0", fields)


def test_jobs_and_request_ids_are_indexed_behind_the_stream_by_the_entry_millisecond(
    redis_client,
):
    append(redis_client, [job(0, request="mine"), job(1)])
    append(redis_client, [job(2)])
    assert redis_client.zcard(index_key("iris")) == 0  # the hot path does not index
    assert index_new(redis_client, "iris") == 2
    assert index_new(redis_client, "iris") == 0  # after its cursor: nothing new
    [first, second] = redis_client.xrange(stream_key("iris"))
    ms = int(first[0].decode().split("-")[0])
    assert redis_client.zscore(index_key("iris"), job_member("job-0")) == ms
    assert redis_client.zscore(index_key("iris"), job_member("job-1")) == ms
    assert redis_client.zscore(index_key("iris"), request_member("k1", "mine")) == ms
    later = int(second[0].decode().split("-")[0])
    assert redis_client.zscore(index_key("iris"), job_member("job-2")) == later
    assert redis_client.zcard(index_key("iris")) == 4  # job-1 and job-2 had no request id


def test_a_message_of_thousands_of_jobs_is_indexed_whole(redis_client):
    """The script scores the index members in chunks: Lua's unpack has a limit."""
    append(redis_client, [job(i, request=f"r{i}") for i in range(3000)])
    index_new(redis_client, "iris")
    assert redis_client.zcard(index_key("iris")) == 6000
    assert len(read_recent(redis_client, "iris", 1)) == 3000


def test_indexing_goes_a_chunk_of_entries_per_call_and_resumes_after_its_cursor(redis_client):
    for i in range(INDEX_CHUNK + 5):
        append(redis_client, [job(i)])
    assert index_new(redis_client, "iris") == INDEX_CHUNK + 5
    append(redis_client, [job(-1)])
    assert index_new(redis_client, "iris") == 1
    assert redis_client.zcard(index_key("iris")) == INDEX_CHUNK + 6


def test_the_cap_counts_jobs_not_messages(redis_client):
    """Messages of 10 jobs under a cap of 1,000 jobs: about 100 entries stay, not 1,000."""
    for m in range(300):
        append(redis_client, [job(10 * m + i) for i in range(10)], max_entries=1000)
    kept = len(read_recent(redis_client, "iris", 10**6))
    assert 1000 <= kept <= 2000
    assert read_recent(redis_client, "iris", 1)[-1]["job"] == "job-2999"


@pytest.mark.parametrize("cap", [100, 300])
def test_the_cap_trims_the_stream_and_trimming_the_index_follows(redis_client, cap):
    """Entries beyond the cap leave the stream (about: MAXLEN ~); trim_index (the flusher)
    then drops their index members and the labels kept for idempotency; the newest ones
    stay findable."""
    for i in range(3 * cap):
        redis_client.hset(labelled_key("iris"), f"job-{i}", "x")
        append(redis_client, [job(i, request=f"r{i}")], max_entries=cap)
        if i % 10 == 9:
            index_new(redis_client, "iris")  # as the flusher does, between the appends
    length = redis_client.xlen(stream_key("iris"))
    assert cap <= length < 3 * cap
    assert redis_client.zcard(index_key("iris")) == 2 * 3 * cap  # indexing never trims
    assert trim_index(redis_client, "iris") > 0
    oldest_ms = int(redis_client.xrange(stream_key("iris"), count=1)[0][0].decode().split("-")[0])
    scores = [score for _, score in redis_client.zrange(index_key("iris"), 0, -1, withscores=True)]
    assert min(scores) >= oldest_ms
    assert redis_client.zscore(index_key("iris"), job_member(f"job-{3 * cap - 1}")) is not None
    # everything still in the stream is indexed, and labels remain only for those
    in_stream = {e["job"] for e in read_recent(redis_client, "iris", 10 * cap)}
    members = {m.decode() for m in redis_client.zrange(index_key("iris"), 0, -1)}
    assert members >= {job_member(job) for job in in_stream}
    labelled = {k.decode() for k in redis_client.hkeys(labelled_key("iris"))}
    assert labelled < {f"job-{i}" for i in range(3 * cap)}
    assert "job-0" not in labelled
    assert trim_index(redis_client, "iris") == 0  # nothing more to drop


def test_a_trim_call_drops_at_most_its_chunk_and_the_calls_drop_all(redis_client, monkeypatch):
    """Redis serves no one while a script runs: each TRIM call is bounded."""
    monkeypatch.setattr(prediction_log, "TRIM_CHUNK", 50)
    for i in range(300):
        append(redis_client, [job(i, request=f"r{i}")], max_entries=100)
        if i % 10 == 9:
            index_new(redis_client, "iris")  # as the flusher does, between the appends
    keys = (stream_key("iris"), index_key("iris"), labelled_key("iris"))
    assert redis_client.eval(prediction_log.TRIM, 3, *keys, 7) == 7
    assert trim_index(redis_client, "iris") > 50  # in several calls
    assert redis_client.eval(prediction_log.TRIM, 3, *keys, 7) == 0

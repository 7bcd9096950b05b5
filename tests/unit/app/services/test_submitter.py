"""JobSubmitter on fakeredis: jobs of one window become ONE Celery message on `predict`."""

from __future__ import annotations

import asyncio
import base64

import fakeredis
import orjson
import pytest
import redis.exceptions

from app.services.admission import Admission
from app.services.submitter import BACKLOG, AlreadyClaimed, Claim, JobSubmitter
from core.messages import PREDICT_QUEUE, PREDICT_TASK, idempotency_key, job_key

NEVER_MS = 600_000.0  # a window that never closes by time: only size or drain flushes it


def open_admission() -> Admission:
    """Admission that never refuses: these tests are about grouping, not backpressure."""
    return Admission(
        max_queue_depth=10**9, max_queue_bytes=10**12, memory_backpressure=0.8, retry_after=1
    )


def job(job_id: str, rows: int = 1) -> dict:
    return {
        "job_id": job_id,
        "request_id": f"req-{job_id}",
        "rows": [[float(i), 1.0, 2.0, 3.0] for i in range(rows)],
        "features": ["a", "b", "c", "d"],
        "expires_at": None,
    }


def decode(payload: bytes) -> tuple[dict, list[dict]]:
    envelope = orjson.loads(payload)
    args, _kwargs, _embed = orjson.loads(base64.b64decode(envelope["body"]))
    return envelope, args[0]


async def queued(client) -> list[tuple[dict, list[dict]]]:
    """Messages on the predict list, oldest first (LPUSH puts the newest at the head)."""
    return [decode(p) for p in reversed(await client.lrange(PREDICT_QUEUE, 0, -1))]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


def test_jobs_of_one_window_share_one_message_with_their_own_records(server):
    async def scenario():
        client = fakeredis.FakeAsyncRedis(server=server)
        submitter = JobSubmitter(
            client, admission=open_admission(), max_rows=100, max_wait_ms=2.0, ttl=60
        )
        await asyncio.gather(*(submitter.submit(job(f"j{i}", rows=i + 1)) for i in range(3)))
        messages = await queued(client)
        records = [orjson.loads(await client.get(job_key(f"j{i}"))) for i in range(3)]
        ttl = await client.ttl(job_key("j0"))
        return submitter, messages, records, ttl

    submitter, messages, records, ttl = run(scenario())
    assert len(messages) == 1
    envelope, group = messages[0]
    task_id = envelope["headers"]["id"]
    assert envelope["headers"]["task"] == PREDICT_TASK
    assert envelope["properties"]["delivery_info"]["routing_key"] == PREDICT_QUEUE
    assert [j["job_id"] for j in group] == ["j0", "j1", "j2"]
    assert [len(j["rows"]) for j in group] == [1, 2, 3]
    assert group[2] == job("j2", rows=3)
    for i, record in enumerate(records):
        assert record["job_id"] == f"j{i}"
        assert record["request_id"] == f"req-j{i}"
        assert record["kind"] == "predict"
        assert record["status"] == "PENDING"
        assert record["task_id"] == task_id
    assert 0 < ttl <= 60
    assert submitter.admission.queue_depth == 0  # messages ahead of ours


def test_a_group_flushes_when_it_reaches_max_rows(server):
    async def scenario():
        client = fakeredis.FakeAsyncRedis(server=server)
        submitter = JobSubmitter(
            client, admission=open_admission(), max_rows=4, max_wait_ms=NEVER_MS, ttl=60
        )
        # The window never closes by time: these return only because 2 + 2 rows fill a group.
        await asyncio.gather(submitter.submit(job("a", 2)), submitter.submit(job("b", 2)))
        await submitter.submit(job("big", 5))  # alone over the limit: its own message at once
        return await queued(client)

    messages = run(scenario())
    assert [[j["job_id"] for j in group] for _, group in messages] == [["a", "b"], ["big"]]
    assert messages[0][0]["headers"]["id"] != messages[1][0]["headers"]["id"]


def test_the_next_job_after_a_full_group_starts_a_new_one(server):
    async def scenario():
        client = fakeredis.FakeAsyncRedis(server=server)
        submitter = JobSubmitter(
            client, admission=open_admission(), max_rows=2, max_wait_ms=NEVER_MS, ttl=60
        )
        await asyncio.gather(*(submitter.submit(job(f"j{i}")) for i in range(4)))
        return await queued(client)

    messages = run(scenario())
    assert [[j["job_id"] for j in group] for _, group in messages] == [["j0", "j1"], ["j2", "j3"]]


def test_drain_flushes_what_is_buffered(server):
    async def scenario():
        client = fakeredis.FakeAsyncRedis(server=server)
        submitter = JobSubmitter(
            client, admission=open_admission(), max_rows=100, max_wait_ms=NEVER_MS, ttl=60
        )
        waiting = asyncio.ensure_future(submitter.submit(job("only")))
        await asyncio.sleep(0)  # the job joins the open group
        assert await client.llen(PREDICT_QUEUE) == 0
        await submitter.drain()
        await waiting
        return await queued(client)

    messages = run(scenario())
    assert [[j["job_id"] for j in group] for _, group in messages] == [["only"]]


def test_a_redis_error_reaches_every_waiter_and_writes_nothing(server):
    async def scenario():
        client = fakeredis.FakeAsyncRedis(server=server)
        submitter = JobSubmitter(
            client, admission=open_admission(), max_rows=100, max_wait_ms=2.0, ttl=60
        )
        server.connected = False
        outcomes = await asyncio.gather(
            *(submitter.submit(job(f"j{i}")) for i in range(3)), return_exceptions=True
        )
        server.connected = True
        keys = await client.keys("*")
        await submitter.submit(job("after"))  # the submitter recovers with Redis
        return outcomes, keys, await queued(client)

    outcomes, keys, messages = run(scenario())
    assert len(outcomes) == 3
    assert all(isinstance(o, redis.exceptions.ConnectionError) for o in outcomes)
    assert outcomes[0] is outcomes[1] is outcomes[2]  # one group, one failed write
    assert keys == []
    assert [[j["job_id"] for j in group] for _, group in messages] == [["after"]]


async def _stream(submitter, count: int, every: float = 0.0) -> None:
    """``count`` jobs, one per ``every`` seconds (0: one per turn of the event loop)."""
    pending = []
    for i in range(count):
        pending.append(asyncio.ensure_future(submitter.submit(job(f"s{i}"))))
        await asyncio.sleep(every)
    await asyncio.gather(*pending)


def _groups(messages) -> list[list[str]]:
    return [[j["job_id"] for j in group] for _, group in messages]


def _behind(server, max_wait_ms: float, backlog_wait_ms: float) -> JobSubmitter:
    submitter = JobSubmitter(
        fakeredis.FakeAsyncRedis(server=server),
        admission=open_admission(),
        max_rows=1000,
        max_wait_ms=max_wait_ms,
        backlog_wait_ms=backlog_wait_ms,
        ttl=60,
    )
    submitter.admission.queue_depth = BACKLOG + 1  # messages waiting: the workers are behind
    return submitter


def test_when_workers_are_behind_a_group_stays_open_while_every_loop_turn_adds_a_job(server):
    async def scenario():
        submitter = _behind(server, max_wait_ms=0.0, backlog_wait_ms=NEVER_MS)
        await _stream(submitter, 50)
        return await queued(submitter.client)

    assert _groups(run(scenario())) == [[f"s{i}" for i in range(50)]]


def test_when_workers_keep_up_the_same_stream_is_cut_at_max_wait(server):
    async def scenario():
        client = fakeredis.FakeAsyncRedis(server=server)
        submitter = JobSubmitter(
            client,
            admission=open_admission(),
            max_rows=1000,
            max_wait_ms=0.0,
            backlog_wait_ms=NEVER_MS,
            ttl=60,
        )
        await _stream(submitter, 50)
        return await queued(client)

    groups = _groups(run(scenario()))
    assert len(groups) > 1
    # Every job once; the concurrent writes of several groups may reach Redis in any order.
    assert sorted(j for group in groups for j in group) == sorted(f"s{i}" for i in range(50))


def test_when_workers_are_behind_a_group_closes_once_a_loop_turn_brings_no_job(server):
    # Jobs 10 ms apart: after max_wait (0) the group closes at the first quiet turn, long
    # before backlog_wait, so each job goes alone.
    async def scenario():
        submitter = _behind(server, max_wait_ms=0.0, backlog_wait_ms=NEVER_MS)
        submitter.admission.queue_depth = 10**6  # stays behind after each write too
        await _stream(submitter, 3, every=0.01)
        return await queued(submitter.client)

    assert _groups(run(scenario())) == [["s0"], ["s1"], ["s2"]]


def test_when_workers_are_behind_a_busy_stream_is_cut_at_backlog_wait(server):
    async def scenario():
        submitter = _behind(server, max_wait_ms=0.0, backlog_wait_ms=20.0)
        loop = asyncio.get_running_loop()
        pending, deadline = [], loop.time() + 0.2
        while loop.time() < deadline:  # a job every loop turn for 200 ms
            pending.append(asyncio.ensure_future(submitter.submit(job(f"s{len(pending)}"))))
            await asyncio.sleep(0)
        await asyncio.gather(*pending)
        return await queued(submitter.client), len(pending)

    messages, count = run(scenario())
    groups = _groups(messages)
    assert len(groups) >= 2  # 200 ms of jobs, groups capped at 20 ms
    assert sorted(j for group in groups for j in group) == sorted(f"s{i}" for i in range(count))


# -- idempotency claims: written with their job, in the same script ---------------------------
def _submitter(client, max_wait_ms: float = 2.0) -> JobSubmitter:
    return JobSubmitter(
        client, admission=open_admission(), max_rows=100, max_wait_ms=max_wait_ms, ttl=60
    )


def claim(key: str, job_id: str, digest: str = "d1") -> Claim:
    return Claim(idempotency_key(key), f"{job_id} {digest}")


def test_a_claim_is_written_with_its_job_and_the_window_as_its_ttl(server):
    async def scenario():
        client = fakeredis.FakeAsyncRedis(server=server)
        await _submitter(client).submit(job("j1"), claim("k", "j1"))
        return await client.get(idempotency_key("k")), await client.ttl(idempotency_key("k"))

    value, ttl = run(scenario())
    assert value == b"j1 d1"
    assert 590 < ttl <= 600  # api.idempotency_window_seconds (default of JobSubmitter)


def test_a_taken_key_queues_nothing_for_its_job_and_the_others_go_on(server):
    async def scenario():
        client = fakeredis.FakeAsyncRedis(server=server)
        await client.set(idempotency_key("k"), b"earlier d1")
        submitter = _submitter(client)
        outcomes = await asyncio.gather(
            submitter.submit(job("retry"), claim("k", "retry")),
            submitter.submit(job("other"), claim("k2", "other")),
            submitter.submit(job("plain")),
            return_exceptions=True,
        )
        return outcomes, await queued(client), await client.exists(job_key("retry"))

    outcomes, messages, retry_record = run(scenario())
    assert isinstance(outcomes[0], AlreadyClaimed) and outcomes[0].held == "earlier d1"
    assert outcomes[1:] == [None, None]
    assert _groups(messages) == [["other", "plain"]]
    assert retry_record == 0


def test_the_same_key_twice_in_one_group_makes_one_job(server):
    async def scenario():
        client = fakeredis.FakeAsyncRedis(server=server)
        submitter = _submitter(client)
        outcomes = await asyncio.gather(
            *(submitter.submit(job(f"j{i}"), claim("k", f"j{i}")) for i in range(3)),
            return_exceptions=True,
        )
        return outcomes, await queued(client)

    outcomes, messages = run(scenario())
    assert outcomes[0] is None
    assert [o.held for o in outcomes[1:]] == ["j0 d1", "j0 d1"]  # replays of the first job
    assert _groups(messages) == [["j0"]]


def test_a_refused_write_leaves_neither_claim_nor_job(server):
    async def scenario():
        client = fakeredis.FakeAsyncRedis(server=server)
        submitter = _submitter(client)
        await client.set(PREDICT_QUEUE, b"not a list")  # LPUSH fails: WRONGTYPE
        try:
            await submitter.submit(job("j1"), claim("k", "j1"))
        except redis.exceptions.ResponseError as exc:
            error = exc
        return error, await client.exists(idempotency_key("k"), job_key("j1"))

    error, left = run(scenario())
    assert "WRONGTYPE" in str(error)
    assert left == 0  # Redis does not roll scripts back: the failing write must come first

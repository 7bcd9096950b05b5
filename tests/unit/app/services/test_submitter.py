"""JobSubmitter on fakeredis: jobs of one window become ONE Celery message on `predict`."""

from __future__ import annotations

import asyncio

import fakeredis
import orjson
import pytest
import redis.exceptions
from loguru import logger

from app.metrics import GatewayMetrics
from app.services import submitter as submitter_module
from app.services.idempotency import AlreadyClaimed, Claim, idempotency_key
from app.services.submitter import BACKLOG, JobSubmitter
from core.jobs import job_key
from core.messages import ALONE, PREDICT_QUEUE, PREDICT_TASK
from tests.factories import (
    decode_message,
    finished,
    memory_tracer,
    open_admission,
    predict_job,
    run,
    samples,
    settings_with,
    value,
)

NEVER_MS = 600_000.0  # a window that never closes by time: only size or drain flushes it


def decode(payload: bytes) -> tuple[dict, list[dict]]:
    """A predict message's envelope and its jobs."""
    envelope, (args, _kwargs, _embed) = decode_message(payload)
    return envelope, args[0]


async def queued(client) -> list[tuple[dict, list[dict]]]:
    """Messages on the predict list, oldest first (LPUSH puts the newest at the head)."""
    return [decode(p) for p in reversed(await client.lrange(PREDICT_QUEUE, 0, -1))]


def test_jobs_of_one_window_share_one_message_with_their_own_records(redis_server):
    async def scenario():
        client = fakeredis.FakeAsyncRedis(server=redis_server)
        submitter = JobSubmitter(
            client, admission=open_admission(), max_rows=100, max_wait_ms=2.0, ttl=60
        )
        await asyncio.gather(
            *(submitter.submit(predict_job(f"j{i}", rows=i + 1)) for i in range(3))
        )
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
    assert group[2] == predict_job("j2", rows=3)
    for i, record in enumerate(records):
        assert record["job_id"] == f"j{i}"
        assert record["request_id"] == f"req-j{i}"
        assert record["kind"] == "predict"
        assert record["status"] == "PENDING"
        assert record["task_id"] == task_id
    assert 0 < ttl <= 60
    assert submitter.admission.queue_depth == 0  # messages ahead of ours


def test_a_group_flushes_when_it_reaches_max_rows(redis_server):
    async def scenario():
        client = fakeredis.FakeAsyncRedis(server=redis_server)
        submitter = JobSubmitter(
            client, admission=open_admission(), max_rows=4, max_wait_ms=NEVER_MS, ttl=60
        )
        # The window never closes by time: these return only because 2 + 2 rows fill a group.
        await asyncio.gather(
            submitter.submit(predict_job("a", 2)), submitter.submit(predict_job("b", 2))
        )
        await submitter.submit(
            predict_job("big", 5)
        )  # alone over the limit: its own message at once
        return await queued(client)

    messages = run(scenario())
    assert [[j["job_id"] for j in group] for _, group in messages] == [["a", "b"], ["big"]]
    assert messages[0][0]["headers"]["id"] != messages[1][0]["headers"]["id"]


def test_the_next_job_after_a_full_group_starts_a_new_one(redis_server):
    async def scenario():
        client = fakeredis.FakeAsyncRedis(server=redis_server)
        submitter = JobSubmitter(
            client, admission=open_admission(), max_rows=2, max_wait_ms=NEVER_MS, ttl=60
        )
        await asyncio.gather(*(submitter.submit(predict_job(f"j{i}")) for i in range(4)))
        return await queued(client)

    messages = run(scenario())
    assert [[j["job_id"] for j in group] for _, group in messages] == [["j0", "j1"], ["j2", "j3"]]


def test_drain_flushes_what_is_buffered(redis_server):
    async def scenario():
        client = fakeredis.FakeAsyncRedis(server=redis_server)
        submitter = JobSubmitter(
            client, admission=open_admission(), max_rows=100, max_wait_ms=NEVER_MS, ttl=60
        )
        waiting = asyncio.ensure_future(submitter.submit(predict_job("only")))
        await asyncio.sleep(0)  # the job joins the open group
        assert await client.llen(PREDICT_QUEUE) == 0
        await submitter.drain()
        await waiting
        return await queued(client)

    messages = run(scenario())
    assert [[j["job_id"] for j in group] for _, group in messages] == [["only"]]


def test_a_redis_error_reaches_every_waiter_and_writes_nothing(redis_server):
    async def scenario():
        client = fakeredis.FakeAsyncRedis(server=redis_server)
        submitter = JobSubmitter(
            client, admission=open_admission(), max_rows=100, max_wait_ms=2.0, ttl=60
        )
        redis_server.connected = False
        outcomes = await asyncio.gather(
            *(submitter.submit(predict_job(f"j{i}")) for i in range(3)), return_exceptions=True
        )
        redis_server.connected = True
        keys = await client.keys("*")
        await submitter.submit(predict_job("after"))  # the submitter recovers with Redis
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
        pending.append(asyncio.ensure_future(submitter.submit(predict_job(f"s{i}"))))
        await asyncio.sleep(every)
    await asyncio.gather(*pending)


def _groups(messages) -> list[list[str]]:
    return [[j["job_id"] for j in group] for _, group in messages]


def _behind(redis_server, max_wait_ms: float, backlog_wait_ms: float) -> JobSubmitter:
    submitter = JobSubmitter(
        fakeredis.FakeAsyncRedis(server=redis_server),
        admission=open_admission(),
        max_rows=1000,
        max_wait_ms=max_wait_ms,
        backlog_wait_ms=backlog_wait_ms,
        ttl=60,
    )
    submitter.admission.queue_depth = BACKLOG + 1  # messages waiting: the workers are behind
    return submitter


def test_when_workers_are_behind_a_group_stays_open_while_every_loop_turn_adds_a_job(redis_server):
    async def scenario():
        submitter = _behind(redis_server, max_wait_ms=0.0, backlog_wait_ms=NEVER_MS)
        await _stream(submitter, 50)
        return await queued(submitter.client)

    assert _groups(run(scenario())) == [[f"s{i}" for i in range(50)]]


def test_when_workers_keep_up_the_same_stream_is_cut_at_max_wait(redis_server):
    async def scenario():
        submitter = _no_window(redis_server)
        await _stream(submitter, 50)
        return await queued(submitter.client)

    groups = _groups(run(scenario()))
    assert len(groups) > 1
    # Every job once; the concurrent writes of several groups may reach Redis in any order.
    assert sorted(j for group in groups for j in group) == sorted(f"s{i}" for i in range(50))


def test_when_workers_are_behind_a_group_closes_once_a_loop_turn_brings_no_job(redis_server):
    # Jobs 10 ms apart: after max_wait (0) the group closes at the first quiet turn, long
    # before backlog_wait, so each job goes alone.
    async def scenario():
        submitter = _behind(redis_server, max_wait_ms=0.0, backlog_wait_ms=NEVER_MS)
        submitter.admission.queue_depth = 10**6  # stays behind after each write too
        await _stream(submitter, 3, every=0.01)
        return await queued(submitter.client)

    assert _groups(run(scenario())) == [["s0"], ["s1"], ["s2"]]


def test_when_workers_are_behind_a_busy_stream_is_cut_at_backlog_wait(redis_server):
    async def scenario():
        submitter = _behind(redis_server, max_wait_ms=0.0, backlog_wait_ms=20.0)
        loop = asyncio.get_running_loop()
        closed, close = [], submitter._flush
        submitter._flush = lambda group: (closed.append(group), close(group))
        # A job every loop turn for 200 ms and until two groups closed (a fixed 200 ms stream
        # failed on a loaded machine: a stall past its end left one group), at most 5 s: a
        # group that lingered while jobs keep coming would make one message in all that time.
        start = loop.time()
        pending, deadline = [], start + 5.0
        while loop.time() < deadline and (loop.time() < start + 0.2 or len(closed) < 2):
            pending.append(asyncio.ensure_future(submitter.submit(predict_job(f"s{len(pending)}"))))
            await asyncio.sleep(0)
        await asyncio.gather(*pending)
        return await queued(submitter.client), len(pending)

    messages, count = run(scenario())
    groups = _groups(messages)
    assert len(groups) >= 2  # groups capped at 20 ms
    assert sorted(j for group in groups for j in group) == sorted(f"s{i}" for i in range(count))


# -- every request in progress has joined: no window to wait out -----------------------------
def _never_closing(redis_server, max_rows: int = 1000, **options) -> JobSubmitter:
    """A submitter on ``redis_server`` whose groups never close on their window; ``options``
    as JobSubmitter's (``arrivals``, ``metrics``)."""
    client = fakeredis.FakeAsyncRedis(server=redis_server)
    return JobSubmitter(
        client,
        admission=open_admission(),
        max_rows=max_rows,
        max_wait_ms=NEVER_MS,
        ttl=60,
        **options,
    )


async def _request(submitter: JobSubmitter, job_id: str) -> None:
    """A predict request as the data plane makes it (app/services/dataplane.py)."""
    with submitter.request():
        await submitter.submit(predict_job(job_id))


async def _closed_early_then_drained(submitter: JobSubmitter, first: asyncio.Future):
    """Did ``first``'s group close within 50 ms? Then drain; the messages queued by then."""
    done, _ = await asyncio.wait([first], timeout=0.05)
    await submitter.drain()
    await first
    return bool(done), await queued(submitter.client)


def test_a_lone_request_is_queued_without_waiting_for_the_window(redis_server):
    async def scenario():
        submitter = _never_closing(redis_server)
        await asyncio.wait_for(_request(submitter, "alone"), 1.0)
        return await queued(submitter.client), submitter.requests

    messages, requests = run(scenario())
    assert _groups(messages) == [["alone"]] and requests == 0


def test_with_another_request_in_progress_the_window_is_held(redis_server):
    async def scenario():
        submitter = _never_closing(redis_server)
        with submitter.request():  # e.g. a sync request waiting for its answer
            first = asyncio.ensure_future(_request(submitter, "first"))
            done, _ = await asyncio.wait([first], timeout=0.05)
            held = not done and await queued(submitter.client) == []
            await submitter.drain()
            await first
        return held, await queued(submitter.client)

    held, messages = run(scenario())
    assert held and _groups(messages) == [["first"]]


def test_once_the_last_request_in_progress_joins_the_group_closes_without_the_window(
    redis_server,
):
    async def scenario():
        submitter = _never_closing(redis_server)
        with submitter.request():  # a second request, its body still being read
            first = asyncio.ensure_future(_request(submitter, "first"))
            await asyncio.sleep(0.02)
            held = not first.done()
            await asyncio.wait_for(submitter.submit(predict_job("second")), 1.0)
        await asyncio.wait_for(first, 1.0)
        return held, await queued(submitter.client)

    held, messages = run(scenario())
    assert held and _groups(messages) == [["first", "second"]]


def test_a_request_that_begins_in_the_same_loop_turn_keeps_the_group_open(redis_server):
    async def scenario():
        submitter = _never_closing(redis_server)
        first = asyncio.ensure_future(_request(submitter, "first"))
        await asyncio.sleep(0)  # the first has joined; its group would close next turn
        with submitter.request():  # but another request begins first: it may join
            return await _closed_early_then_drained(submitter, first)

    closed_early, messages = run(scenario())
    assert not closed_early and _groups(messages) == [["first"]]


def test_requests_read_in_the_same_loop_turn_share_a_message(redis_server):
    async def scenario():
        submitter = _never_closing(redis_server)
        await asyncio.wait_for(
            asyncio.gather(*(_request(submitter, f"r{i}") for i in range(3))), 1.0
        )
        return await queued(submitter.client)

    assert _groups(run(scenario())) == [["r0", "r1", "r2"]]


# -- POST requests read meanwhile: the group lingers a turn for them --------------------------
def _counting_reads(redis_server, on_read) -> JobSubmitter:
    """A submitter whose server "reads" a POST request each time ``on_read`` says so: it is
    asked when a closing is scheduled and again when it runs."""
    reads = [0]

    def arrivals() -> int:
        reads[0] += on_read(submitter)
        return reads[0]

    submitter = _never_closing(redis_server, arrivals=arrivals)
    return submitter


def test_a_request_read_while_the_group_was_closing_joins_it(redis_server):
    asked, started = [], []

    def on_read(submitter) -> int:
        asked.append(1)
        if len(asked) != 2:  # not the first closing
            return 0
        # The closing runs and finds that the server has just read another POST request,
        # whose handler starts on the next turn of the loop.
        started.append(asyncio.ensure_future(_request(submitter, "second")))
        return 1

    async def scenario():
        submitter = _counting_reads(redis_server, on_read)
        await asyncio.wait_for(_request(submitter, "first"), 1.0)
        await asyncio.wait_for(started[0], 1.0)
        return await queued(submitter.client)

    assert _groups(run(scenario())) == [["first", "second"]]


def test_a_read_that_brings_no_job_delays_the_closing_by_one_turn_only(redis_server):
    reads = iter([0, 1])  # at scheduling; at the closing (a POST to another route, say)

    async def scenario():
        submitter = _counting_reads(redis_server, lambda _: next(reads, 0))
        await asyncio.wait_for(_request(submitter, "first"), 1.0)
        return await queued(submitter.client)

    assert _groups(run(scenario())) == [["first"]]


def test_while_every_turn_reads_a_post_the_group_waits_for_its_window(redis_server):
    async def scenario():
        submitter = _counting_reads(redis_server, lambda _: 1)
        first = asyncio.ensure_future(_request(submitter, "first"))
        return await _closed_early_then_drained(submitter, first)

    closed_early, messages = run(scenario())
    assert not closed_early and _groups(messages) == [["first"]]


# -- every worker busy with this gateway's messages: gather until one answers -----------------
def _no_window(redis_server, backlog_wait_ms=NEVER_MS, workers=None) -> JobSubmitter:
    """max_wait 0: a group closes at its next loop turn unless held; ``workers``: the worker
    processes the heartbeats report for the predict queue (None: not known)."""
    client = fakeredis.FakeAsyncRedis(server=redis_server)
    return JobSubmitter(
        client,
        admission=open_admission(),
        max_rows=1000,
        max_wait_ms=0.0,
        backlog_wait_ms=backlog_wait_ms,
        ttl=60,
        capacity=lambda queue: workers if queue == PREDICT_QUEUE else None,
    )


async def _waiting(submitter: JobSubmitter, *job_ids: str) -> list[asyncio.Future]:
    """Sync jobs submitted in one loop turn, as their requests do; their submissions."""
    submissions = [
        asyncio.ensure_future(submitter.submit(predict_job(job_id), waits=True))
        for job_id in job_ids
    ]
    await asyncio.sleep(0.01)
    return submissions


def test_while_each_worker_answers_a_message_of_ours_a_group_gathers_until_one_answers(
    redis_server,
):
    async def scenario():
        submitter = _no_window(redis_server, workers=1)
        await asyncio.gather(*await _waiting(submitter, "a"))  # the worker's message
        later = await _waiting(submitter, "b", "c")
        later += await _waiting(submitter, "d")
        held = await queued(submitter.client)
        submitter.answered(["a"])  # the worker is free: the held group goes, whole
        await asyncio.gather(*later)
        return held, await queued(submitter.client)

    held, messages = run(scenario())
    assert _groups(held) == [["a"]]
    assert _groups(messages) == [["a"], ["b", "c", "d"]]


def test_a_held_group_goes_at_backlog_wait_if_no_answer_comes(redis_server):
    async def scenario():
        submitter = _no_window(redis_server, 30.0, workers=1)
        await asyncio.gather(*await _waiting(submitter, "a"))
        await asyncio.wait_for(asyncio.gather(*await _waiting(submitter, "b")), 1.0)
        return await queued(submitter.client)

    assert _groups(run(scenario())) == [["a"], ["b"]]


@pytest.mark.parametrize(
    "case", ["two workers", "workers unknown", "no request waits", "another gateway's answer"]
)
def test_a_group_is_held_only_while_every_worker_answers_a_message_of_this_gateway(
    redis_server, case
):
    async def scenario():
        workers = {"two workers": 2, "workers unknown": None}.get(case, 1)
        submitter = _no_window(redis_server, workers=workers)
        if case == "no request waits":  # async submits: no answer will say when it is done
            await submitter.submit(predict_job("a"))
        else:
            await asyncio.gather(*await _waiting(submitter, "a"))
        if case == "another gateway's answer":
            submitter.answered(["not-ours"])
            submitter.answered(["a"])
        await asyncio.wait_for(asyncio.gather(*await _waiting(submitter, "b")), 1.0)
        return await queued(submitter.client)

    assert _groups(run(scenario())) == [["a"], ["b"]]


def test_a_message_never_answered_stops_holding_groups_after_a_while(redis_server, monkeypatch):
    monkeypatch.setattr(submitter_module, "SERVING_FORGOTTEN", 0.05)

    async def scenario():
        submitter = _no_window(redis_server, workers=1)
        await asyncio.gather(*await _waiting(submitter, "a"))  # its answer never comes
        await asyncio.sleep(0.1)
        await asyncio.wait_for(asyncio.gather(*await _waiting(submitter, "b")), 1.0)
        return await queued(submitter.client)

    assert _groups(run(scenario())) == [["a"], ["b"]]


# -- many models: a message carries one model's jobs (and one pinned version) ----------------
def test_each_model_and_pinned_version_has_its_own_messages_queue_and_size(
    redis_server, monkeypatch
):
    settings = settings_with(
        monkeypatch,
        MODELS__PENGUINS__TRAINER="csv",
        MODELS__PENGUINS__QUEUE="predict-big",
        MODELS__PENGUINS__MAX_BATCH_SIZE="2",
    )

    async def scenario():
        client = fakeredis.FakeAsyncRedis(server=redis_server)
        submitter = JobSubmitter(
            client,
            admission=open_admission(),
            max_rows=100,
            max_wait_ms=NEVER_MS,
            ttl=60,
            models=settings.models,
        )
        jobs = [
            predict_job("i1", model="iris"),
            predict_job("p1", model="penguins"),
            predict_job("i2", model="iris"),
            predict_job("v1", model="iris", version=1),
            predict_job("p2", model="penguins"),  # penguins' group is full at 2 rows
        ]
        waits = [asyncio.ensure_future(submitter.submit(job)) for job in jobs]
        await asyncio.wait_for(waits[1], 5)  # flushed by size, the others still open
        open_groups = sorted(submitter._open, key=str)
        await submitter.drain()
        await asyncio.gather(*waits)
        big = [decode(p) for p in reversed(await client.lrange("predict-big", 0, -1))]
        records = {j: orjson.loads(await client.get(job_key(j))) for j in ("i1", "p1")}
        return open_groups, await queued(client), big, records

    open_groups, default_queue, big_queue, records = run(scenario())
    assert open_groups == [("iris", 1), ("iris", None)]
    assert sorted([j["job_id"] for j in group] for _, group in default_queue) == [
        ["i1", "i2"],
        ["v1"],
    ]
    assert [[j["job_id"] for j in group] for _, group in big_queue] == [["p1", "p2"]]
    envelope = big_queue[0][0]
    assert envelope["properties"]["delivery_info"]["routing_key"] == "predict-big"
    assert envelope["headers"]["shadow"] == f"{PREDICT_TASK}[penguins]"  # Flower's name
    assert records["p1"]["queue"] == "predict-big" and "queue" not in records["i1"]
    assert records["p1"]["model_name"] == "penguins"


# -- idempotency claims: written with their job, in the same script ---------------------------
def _submitter(client, max_wait_ms: float = 2.0) -> JobSubmitter:
    return JobSubmitter(
        client, admission=open_admission(), max_rows=100, max_wait_ms=max_wait_ms, ttl=60
    )


def claim(key: str, job_id: str, digest: str = "d1") -> Claim:
    return Claim(idempotency_key(key), f"{job_id} {digest}")


def test_a_claim_is_written_with_its_job_and_the_window_as_its_ttl(redis_server):
    async def scenario():
        client = fakeredis.FakeAsyncRedis(server=redis_server)
        await _submitter(client).submit(predict_job("j1"), claim("k", "j1"))
        return await client.get(idempotency_key("k")), await client.ttl(idempotency_key("k"))

    value, ttl = run(scenario())
    assert value == b"j1 d1"
    assert 590 < ttl <= 600  # api.idempotency_window_seconds (default of JobSubmitter)


def test_a_taken_key_queues_nothing_for_its_job_and_the_others_go_on(redis_server):
    async def scenario():
        client = fakeredis.FakeAsyncRedis(server=redis_server)
        await client.set(idempotency_key("k"), b"earlier d1")
        submitter = _submitter(client)
        outcomes = await asyncio.gather(
            submitter.submit(predict_job("retry"), claim("k", "retry")),
            submitter.submit(predict_job("other"), claim("k2", "other")),
            submitter.submit(predict_job("plain")),
            return_exceptions=True,
        )
        return outcomes, await queued(client), await client.exists(job_key("retry"))

    outcomes, messages, retry_record = run(scenario())
    assert isinstance(outcomes[0], AlreadyClaimed) and outcomes[0].held == "earlier d1"
    assert outcomes[1:] == [None, None]
    assert _groups(messages) == [["other", "plain"]]
    assert retry_record == 0


def test_the_same_key_twice_in_one_group_makes_one_job(redis_server):
    async def scenario():
        client = fakeredis.FakeAsyncRedis(server=redis_server)
        submitter = _submitter(client)
        outcomes = await asyncio.gather(
            *(submitter.submit(predict_job(f"j{i}"), claim("k", f"j{i}")) for i in range(3)),
            return_exceptions=True,
        )
        return outcomes, await queued(client)

    outcomes, messages = run(scenario())
    assert outcomes[0] is None
    assert [o.held for o in outcomes[1:]] == ["j0 d1", "j0 d1"]  # replays of the first job
    assert _groups(messages) == [["j0"]]


def test_a_refused_write_leaves_neither_claim_nor_job(redis_server):
    async def scenario():
        client = fakeredis.FakeAsyncRedis(server=redis_server)
        submitter = _submitter(client)
        await client.set(PREDICT_QUEUE, b"not a list")  # LPUSH fails: WRONGTYPE
        try:
            await submitter.submit(predict_job("j1"), claim("k", "j1"))
        except redis.exceptions.ResponseError as exc:
            error = exc
        return error, await client.exists(idempotency_key("k"), job_key("j1"))

    error, left = run(scenario())
    assert "WRONGTYPE" in str(error)
    assert left == 0  # Redis does not roll scripts back: the failing write must come first


# -- what it counts and logs (app/metrics.py) ---------------------------------------------------
def test_submitter_counts_jobs_and_logs_one_line_per_message_with_every_id():
    lines: list[dict] = []
    sink = logger.add(lambda message: lines.append(message.record), level="INFO")

    async def scenario():
        metrics = GatewayMetrics()
        submitter = _never_closing(fakeredis.FakeServer(), max_rows=3, metrics=metrics)
        await asyncio.gather(
            *(submitter.submit(predict_job(f"j{i}", model="iris")) for i in range(3))
        )
        return metrics

    try:
        metrics = run(scenario())
    finally:
        logger.remove(sink)
    found = samples(metrics.exposition())
    assert value(found, "mlops_jobs_submitted_total", kind="predict", model="iris") == 3
    queued = [r for r in lines if r["name"] == "app.services.submitter"]
    assert len(queued) == 1
    assert queued[0]["extra"]["job_id"] == "j0,j1,j2"
    assert queued[0]["extra"]["request_id"] == "req-j0,req-j1,req-j2"


def test_traced_a_message_of_many_requests_continues_the_first_and_links_the_others(
    redis_server,
):
    tracer, exporter = memory_tracer()
    requests = [f"00-{i + 1:032x}-{i + 1:016x}-01" for i in range(3)]

    async def scenario():
        client = fakeredis.FakeAsyncRedis(server=redis_server)
        submitter = JobSubmitter(
            client, admission=open_admission(), max_rows=3, max_wait_ms=NEVER_MS, ttl=60
        )
        submitter.tracer = tracer
        jobs = [predict_job(f"j{i}", traceparent=tp) for i, tp in enumerate(requests)]
        await asyncio.gather(*(submitter.submit(job) for job in jobs))
        return await queued(client)

    ((envelope, group),) = run(scenario())
    publish = finished(tracer, exporter)["publish predict"]
    assert publish.kind.name == "PRODUCER"
    assert publish.context.trace_id == 1 and publish.parent.span_id == 1  # the first request
    assert [link.context.trace_id for link in publish.links] == [2, 3]
    assert publish.attributes["messaging.batch.message_count"] == 3
    header = envelope["headers"]["traceparent"]
    assert header == f"00-{1:032x}-{publish.context.span_id:016x}-01"
    assert [job["traceparent"] for job in group] == requests


def test_untraced_messages_carry_no_traceparent(redis_server):
    async def scenario():
        client = fakeredis.FakeAsyncRedis(server=redis_server)
        submitter = JobSubmitter(
            client, admission=open_admission(), max_rows=1, max_wait_ms=NEVER_MS, ttl=60
        )
        await submitter.submit(predict_job("j"))
        return await queued(client)

    ((envelope, (job,)),) = run(scenario())
    assert "traceparent" not in envelope["headers"] and "traceparent" not in job


# -- the `alone` header: nothing else of this gateway in flight (workers/pool.py) -----------
async def _sync_request(submitter: JobSubmitter, job_id: str) -> None:
    with submitter.request():
        await submitter.submit(predict_job(job_id), waits=True)


def _alone(messages) -> list[bool | None]:
    return [envelope["headers"].get(ALONE) for envelope, _ in messages]


def test_a_sync_request_with_nothing_else_in_flight_is_sent_alone(redis_server):
    async def scenario():
        submitter = _never_closing(redis_server)
        await asyncio.wait_for(_sync_request(submitter, "only"), 1.0)
        return await queued(submitter.client)

    messages = run(scenario())
    assert _groups(messages) == [["only"]] and _alone(messages) == [True]


def test_an_async_request_is_never_sent_alone(redis_server):
    """Async answers are not followed: a busy stream of them could look alone."""

    async def scenario():
        submitter = _never_closing(redis_server)
        await asyncio.wait_for(_request(submitter, "async"), 1.0)
        return await queued(submitter.client)

    assert _alone(run(scenario())) == [None]


def test_a_message_is_not_alone_while_another_of_ours_is_unanswered(redis_server):
    async def scenario():
        submitter = _no_window(redis_server, workers=2)
        first = asyncio.ensure_future(_sync_request(submitter, "a"))
        await asyncio.sleep(0.01)
        second = asyncio.ensure_future(_sync_request(submitter, "b"))
        await asyncio.gather(first, second)
        submitter.answered(["a"])
        submitter.answered(["b"])
        third = asyncio.ensure_future(_sync_request(submitter, "c"))  # all answered again
        await third
        return await queued(submitter.client)

    messages = run(scenario())
    assert _groups(messages) == [["a"], ["b"], ["c"]]
    assert _alone(messages) == [True, None, True]


def test_a_message_is_not_alone_while_another_request_is_in_progress(redis_server):
    async def scenario():
        submitter = _no_window(redis_server, workers=2)
        with submitter.request():  # e.g. an async request whose body is still being read
            await asyncio.wait_for(_sync_request(submitter, "a"), 1.0)
        return await queued(submitter.client)

    assert _alone(run(scenario())) == [None]

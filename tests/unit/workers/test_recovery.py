"""workers/recovery.py: a live node renews the messages it holds (fakeredis with Lua)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import orjson
import pytest
from loguru import logger

from workers import recovery
from workers.recovery import UNACKED_INDEX_KEY, UNACKED_KEY, Renewer

VISIBILITY = 10


def deliver(redis_client, tag: str, at: float) -> None:
    """What kombu's QoS.append writes when a node receives a message."""
    pipe = redis_client.pipeline()
    pipe.zadd(UNACKED_INDEX_KEY, {tag: at})
    pipe.hset(UNACKED_KEY, tag, orjson.dumps([{"properties": {}}, "", "predict"]))
    pipe.execute()


def acknowledge(redis_client, tag: str) -> None:
    """What kombu's QoS.ack does."""
    redis_client.pipeline().zrem(UNACKED_INDEX_KEY, tag).hdel(UNACKED_KEY, tag).execute()


def due(redis_client, now: float) -> list[bytes]:
    """The tags kombu's sweep (QoS.restore_visible) would put back on their queues now."""
    return redis_client.zrangebyscore(UNACKED_INDEX_KEY, "-inf", now - VISIBILITY)


def test_a_renewed_message_is_not_due_however_long_it_runs(redis_client):
    now = time.time()
    deliver(redis_client, "running", now - 3600)  # a retrain delivered an hour ago
    assert due(redis_client, now) == [b"running"]
    assert Renewer(redis_client, 1.0, clock=lambda: now).renew(["running"]) == []
    assert due(redis_client, now) == []
    assert redis_client.zscore(UNACKED_INDEX_KEY, "running") == pytest.approx(now)
    assert redis_client.hexists(UNACKED_KEY, "running")


def test_an_acknowledged_message_is_reported_gone_and_not_indexed_again(redis_client):
    now = time.time()
    deliver(redis_client, "done", now - 5)
    acknowledge(redis_client, "done")
    assert Renewer(redis_client, 1.0, clock=lambda: now).renew(["done"]) == ["done"]
    assert redis_client.zcard(UNACKED_INDEX_KEY) == 0
    assert not redis_client.exists(UNACKED_KEY)


def test_a_message_already_put_back_is_gone_even_if_its_index_entry_is_left(redis_client):
    """kombu's Channel._restore drops the hash entry only; the index alone is not a message."""
    now = time.time()
    deliver(redis_client, "requeued", now - 20)
    redis_client.hdel(UNACKED_KEY, "requeued")
    assert Renewer(redis_client, 1.0, clock=lambda: now).renew(["requeued"]) == ["requeued"]
    assert redis_client.zscore(UNACKED_INDEX_KEY, "requeued") == pytest.approx(now - 20)


def test_another_nodes_messages_are_not_touched(redis_client):
    now = time.time()
    deliver(redis_client, "mine", now - 20)
    deliver(redis_client, "dead-node", now - 20)
    Renewer(redis_client, 1.0, clock=lambda: now).renew(["mine"])
    assert due(redis_client, now) == [b"dead-node"]
    assert redis_client.zscore(UNACKED_INDEX_KEY, "dead-node") == pytest.approx(now - 20)


def test_an_idle_node_sends_nothing(redis_client):
    renewer = Renewer(redis_client, 1.0, held=dict)
    renewer._script = None  # calling it would fail
    assert renewer.renew_held() == []


def test_a_held_message_put_back_by_a_sweep_is_a_warning(redis_client):
    """Renewed too late (Redis unreachable longer than the visibility timeout): say so."""
    now = time.time()
    deliver(redis_client, "kept", now - 1)
    deliver(redis_client, "acked-meanwhile", now - 1)
    holding = {"kept": "task-1", "taken": "task-2", "acked-meanwhile": "task-3"}
    calls = []

    def held() -> dict[str, str]:
        calls.append(1)
        if len(calls) > 1:  # the main thread finished task-3 between the two looks
            return {k: v for k, v in holding.items() if k != "acked-meanwhile"}
        return dict(holding)

    acknowledge(redis_client, "acked-meanwhile")
    warnings: list[str] = []
    sink = logger.add(warnings.append, level="WARNING", format="{message}")
    try:
        gone = Renewer(redis_client, 1.0, held=held, clock=lambda: now).renew_held()
    finally:
        logger.remove(sink)
    assert sorted(gone) == ["acked-meanwhile", "taken"]
    assert len(warnings) == 1
    assert "task-2" in warnings[0] and "may run twice" in warnings[0]


def test_held_messages_are_the_requests_in_celerys_worker_state(monkeypatch):
    from celery.worker import state

    def request(task_id: str, tag: str | None) -> SimpleNamespace:
        return SimpleNamespace(id=task_id, message=SimpleNamespace(delivery_tag=tag))

    monkeypatch.setattr(state, "requests", {"a": request("a", "tag-a"), "b": request("b", "tag-b")})
    assert recovery.held_messages() == {"tag-a": "a", "tag-b": "b"}


def test_the_thread_renews_every_interval_and_stops(redis_client):
    deliver(redis_client, "running", time.time() - 3600)
    renewer = Renewer(redis_client, 0.05, held=lambda: {"running": "task"}).start()
    try:
        deadline = time.monotonic() + 5
        while redis_client.zscore(UNACKED_INDEX_KEY, "running") < time.time() - 60:
            assert time.monotonic() < deadline, "not renewed"
            time.sleep(0.01)
    finally:
        renewer.stop()


def test_the_thread_survives_a_failed_round(redis_client):
    """Redis away or a bug: log it and try again, or the node's messages would be redelivered."""
    deliver(redis_client, "running", time.time() - 3600)
    rounds = []

    def held() -> dict[str, str]:
        rounds.append(1)
        if len(rounds) == 1:
            raise ConnectionError("Redis is restarting")
        return {"running": "task"}

    renewer = Renewer(redis_client, 0.05, held=held).start()
    try:
        deadline = time.monotonic() + 5
        while redis_client.zscore(UNACKED_INDEX_KEY, "running") < time.time() - 60:
            assert time.monotonic() < deadline, "not renewed after the failed round"
            time.sleep(0.01)
    finally:
        renewer.stop()


def test_a_channel_whose_connection_is_torn_down_leaves_its_messages_to_the_sweep():
    """kombu would build a pool from the forgotten settings (AttributeError): skipped."""
    from kombu.transport import redis as kombu_redis

    recovery.guard_restore_on_close()
    recovery.guard_restore_on_close()  # once only: not wrapped twice
    acquired = []
    channel = SimpleNamespace(
        connection=SimpleNamespace(client=None),
        conn_or_acquire=lambda client: acquired.append(client),
    )
    qos = SimpleNamespace(channel=channel, _delivered={"tag": "message"})
    assert kombu_redis.QoS.restore_unacked(qos) is None
    assert acquired == []
    channel.connection.client = object()  # a live connection: kombu restores as before
    with pytest.raises(TypeError):  # the stub's conn_or_acquire is no context manager
        kombu_redis.QoS.restore_unacked(qos)
    assert acquired == [None]


def test_a_node_about_to_restart_gives_back_what_it_holds_to_the_next_sweep(redis_client):
    now = time.time()
    deliver(redis_client, "prefetched", now)
    deliver(redis_client, "elsewhere", now)  # another node's
    deliver(redis_client, "acknowledged", now)
    acknowledge(redis_client, "acknowledged")
    held = {"prefetched": "t1", "acknowledged": "t2"}
    assert due(redis_client, now) == []
    recovery.give_back(redis_client, held=lambda: held)
    assert due(redis_client, now) == [b"prefetched"]  # at once, not after the timeout
    assert redis_client.zscore(UNACKED_INDEX_KEY, "acknowledged") is None  # not re-added
    assert redis_client.zscore(UNACKED_INDEX_KEY, "elsewhere") == pytest.approx(now)


def test_a_node_holding_nothing_gives_back_nothing(redis_client):
    assert recovery.give_back(redis_client, held=dict) == 0

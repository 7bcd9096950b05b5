"""workers/broker.py: acknowledgements ride along with the next message's bookkeeping, on a
real Redis (kombu's transport needs one; fakeredis is for the unit tests)."""

from __future__ import annotations

import base64
import json

import pytest
import redis
from kombu import Connection
from kombu.asynchronous import get_event_loop, set_event_loop

from workers import broker
from workers.recovery import UNACKED_INDEX_KEY, UNACKED_KEY

QUEUE = "ride-along"


class Loop:
    """The one thing the QoS asks of Celery's event loop: a timer."""

    def __init__(self):
        self.timers: list[tuple[float, object]] = []

    def call_later(self, delay, callback, *args):
        self.timers.append((delay, callback))
        return object()

    def fire(self) -> None:
        timers, self.timers = self.timers, []
        for _delay, callback in timers:
            callback()


@pytest.fixture()
def loop():
    before = get_event_loop()
    loop = Loop()
    set_event_loop(loop)
    yield loop
    set_event_loop(before)


@pytest.fixture()
def channel(redis_server):
    options = {"unacked_key": UNACKED_KEY, "unacked_index_key": UNACKED_INDEX_KEY}
    broker.install()
    with Connection(redis_server.url, transport_options=options) as connection:
        channel = connection.channel()
        producer = connection.Producer(channel)
        for number in range(3):
            producer.publish({"n": number}, routing_key=QUEUE, serializer="json")
        yield channel


def unacked(redis_server) -> set[str]:
    client = redis_server.client()
    tags = {tag.decode() for tag in client.hkeys(UNACKED_KEY)}
    assert tags == {tag.decode() for tag in client.zrange(UNACKED_INDEX_KEY, 0, -1)}
    return tags


def test_installed_every_redis_url_scheme_gets_this_qos_and_keeps_its_scheme(channel):
    assert isinstance(channel.qos, broker.RideAlongQoS)
    assert channel.connection.client.as_uri().startswith("redis://")  # Flower reads it
    for url, transport in [
        ("redis://h:6379/0", broker.Transport),
        ("rediss://h:6380/0", broker.Transport),
        ("sentinel://h:26379/0;sentinel://i:26379/0", broker.SentinelTransport),
    ]:
        assert Connection(url).get_transport_cls() is transport
    assert broker.SentinelChannel.QoS is broker.RideAlongQoS


def test_an_ack_waits_for_the_next_message_and_goes_with_its_bookkeeping(
    redis_server, channel, loop
):
    first = channel.basic_get(QUEUE)
    assert unacked(redis_server) == {first.delivery_tag}
    first.ack()
    assert unacked(redis_server) == {first.delivery_tag}
    assert [delay for delay, _ in loop.timers] == [broker.ACK_DELAY]

    second = channel.basic_get(QUEUE)
    assert unacked(redis_server) == {second.delivery_tag}  # the first went with it
    loop.fire()  # nothing left for the timer
    assert unacked(redis_server) == {second.delivery_tag}


def test_with_no_next_message_the_timer_sends_the_ack(redis_server, channel, loop):
    messages = [channel.basic_get(QUEUE) for _ in range(3)]
    for message in messages[:2]:
        message.ack()
    assert len(loop.timers) == 1  # one timer for the acks held together
    assert len(unacked(redis_server)) == 3
    loop.fire()
    assert unacked(redis_server) == {messages[2].delivery_tag}


def test_without_an_event_loop_an_ack_is_sent_at_once(redis_server, channel):
    set_event_loop(None)
    message = channel.basic_get(QUEUE)
    message.ack()
    assert unacked(redis_server) == set()


def test_closing_sends_held_acks_and_puts_back_the_unacknowledged(redis_server, channel, loop):
    done = channel.basic_get(QUEUE)
    channel.basic_get(QUEUE)  # taken, still running at close
    done.ack()
    channel.close()
    assert unacked(redis_server) == set()
    queued = [json.loads(raw) for raw in redis_server.client().lrange(QUEUE, 0, -1)]
    bodies = [json.loads(base64.b64decode(message["body"])) for message in queued]
    # the running one back on the queue beside the one never taken; not the acknowledged one
    assert sorted(body["n"] for body in bodies) == [1, 2]


def test_a_refused_command_is_logged_when_its_reply_is_read_and_the_next_ones_go_on(
    redis_server, channel, loop, warnings_logged
):
    redis_server.client().set(UNACKED_KEY, "not a hash")  # HSET now fails: WRONGTYPE
    try:
        channel.basic_get(QUEUE)  # sent, not waited for
        assert warnings_logged == []
        loop.fire()  # the timer reads the replies
    finally:
        redis_server.client().delete(UNACKED_KEY, UNACKED_INDEX_KEY)
    assert len(warnings_logged) == 1 and "WRONGTYPE" in warnings_logged[0], warnings_logged
    message = channel.basic_get(QUEUE)
    assert unacked(redis_server) == {message.delivery_tag}


def test_a_primary_turned_replica_raises_so_the_consumer_reconnects(redis_server, channel, loop):
    """After a failover the old primary refuses writes (READONLY): that is not logged and
    forgotten like a refused command, it is raised, as kombu's own bookkeeping raises it."""
    message = channel.basic_get(QUEUE)
    admin = redis_server.client()
    admin.replicaof("127.0.0.1", 1)  # nothing listens there: a replica that refuses writes
    try:
        message.ack()
        with pytest.raises(redis.exceptions.ReadOnlyError):
            channel.qos.flush()
    finally:
        admin.replicaof("no", "one")


@pytest.mark.parametrize("with_loop", [False, True])
def test_an_ack_that_comes_after_its_channel_closed_is_left_to_the_sweep(
    redis_server, channel, loop, warnings_logged, with_loop
):
    """The connection was lost and Celery closed the channel (putting back what it held); a
    task that ends after that acknowledges on the old channel. Sending it there raised
    (kombu's pool is gone) and stopped the worker: now it is left to the sweep."""
    message = channel.basic_get(QUEUE)
    channel.close()  # Celery closes what it held on a connection it lost...
    channel._disconnect_pools()  # ...and its pools are gone (kombu's state in the crash seen)
    if not with_loop:
        set_event_loop(None)
    message.ack()
    loop.fire()
    assert any("closed channel" in line for line in warnings_logged), warnings_logged
    assert redis_server.client().llen(QUEUE) == 3  # put back at close, not lost

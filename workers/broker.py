"""kombu's Redis transport with acknowledgements that ride along (:func:`install`).

kombu emulates acknowledgement on Redis with bookkeeping of its own (workers/recovery.py): it
records every delivered message in the ``unacked`` hash and its index (``append``) and
removes it again once the task ran (``ack``), each in a MULTI/EXEC transaction on a client
made for the occasion: two blocking round trips per message in the worker's main process,
45 % of its busy time under load (py-spy, sync predict at 1 and 16 connections). Here:

- an acknowledgement takes effect in memory at once and reaches Redis with the next message's
  bookkeeping, in the same round trip; when no message comes, a timer sends it within
  ``ACK_DELAY`` seconds (and closing the channel sends it first);
- the bookkeeping goes in a plain pipeline, without MULTI/EXEC, on one client per channel.

Nothing is given up: the sweep looks only at the index, and only at entries older than the
visibility timeout, so it never sees half of an append (index first) or of an ack (index
first). A message acknowledged in memory stays in ``unacked`` for at most ``ACK_DELAY``
longer; if the node dies meanwhile, the message comes back as a dead node's do, and its jobs,
answered already, are not run again (workers/batches.py skips finished jobs on redelivery).
"""

from __future__ import annotations

from time import time

import redis
from kombu.asynchronous import get_event_loop
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps
from loguru import logger

ACK_DELAY = 0.05  # seconds an acknowledgement waits for a message to ride along with


class RideAlongQoS(kombu_redis.QoS):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._pending: list[str] = []  # acknowledged in memory, not yet in Redis
        self._flush_timer = None
        self._client = None

    def _pipeline(self) -> redis.client.Pipeline:
        if self._client is None:  # kombu makes one per operation: 7 % of the main process
            self._client = self.channel.Client(connection_pool=self.channel.pool)
        return self._client.pipeline(transaction=False)

    def _remove_pending(self, pipe) -> list[str]:
        tags, self._pending = self._pending, []
        if tags:
            pipe.zrem(self.unacked_index_key, *tags)
            pipe.hdel(self.unacked_key, *tags)
        return tags

    def append(self, message, delivery_tag):
        delivery = message.delivery_info
        raw = dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
        pipe = self._pipeline()
        pipe.zadd(self.unacked_index_key, {delivery_tag: time()})
        pipe.hset(self.unacked_key, delivery_tag, raw)
        tags = self._remove_pending(pipe)
        try:
            pipe.execute()
        except Exception:
            self._pending[:0] = tags  # the next message or the timer tries them again
            raise
        virtual.QoS.append(self, message, delivery_tag)

    def ack(self, delivery_tag):
        virtual.QoS.ack(self, delivery_tag)
        self._pending.append(delivery_tag)
        if self._flush_timer is None:
            loop = get_event_loop()
            if loop is None:  # no event loop (a synchronous consumer): at once
                self.flush()
            else:
                self._flush_timer = loop.call_later(ACK_DELAY, self._flush_later)

    def _flush_later(self) -> None:
        self._flush_timer = None
        try:
            self.flush()
        except redis.RedisError as exc:  # Redis away: the next message or close tries again
            logger.warning("{} acknowledgement(s) not sent yet: {!r}", len(self._pending), exc)

    def flush(self) -> None:
        """Send the acknowledgements still held in memory."""
        if not self._pending:
            return
        pipe = self._pipeline()
        tags = self._remove_pending(pipe)
        try:
            pipe.execute()
        except Exception:
            self._pending[:0] = tags
            raise

    def restore_unacked(self, client=None):
        """At close: the held acknowledgements first. With the connection torn down already
        (workers/recovery.py ``guard_restore_on_close``) they come back by the sweep, their
        jobs answered."""
        transport = self.channel.connection
        if self._pending and not (transport is not None and transport.client is None):
            try:
                self.flush()
            except redis.RedisError as exc:
                logger.warning("{} acknowledgement(s) not sent: {!r}", len(self._pending), exc)
        self._pending.clear()
        return super().restore_unacked(client)


class Channel(kombu_redis.Channel):
    QoS = RideAlongQoS


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelChannel(kombu_redis.SentinelChannel):
    QoS = RideAlongQoS


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel


TRANSPORTS = {
    "redis": f"{__name__}:Transport",
    "rediss": f"{__name__}:Transport",
    "sentinel": f"{__name__}:SentinelTransport",
}


def install() -> None:
    """Let this process's ``redis://``, ``rediss://`` and ``sentinel://`` broker URLs name
    these transports, before any connection is made (kombu caches the class of a scheme).

    An alias rather than Celery's ``broker_transport`` setting: the URL keeps its scheme, so
    Flower's broker page, ``celery inspect`` and the worker's banner read it as before."""
    from kombu.transport import TRANSPORT_ALIASES, _transport_cache

    TRANSPORT_ALIASES.update(TRANSPORTS)
    for scheme in TRANSPORTS:
        _transport_cache.pop(scheme, None)

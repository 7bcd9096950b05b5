"""kombu's Redis transport with acknowledgements that ride along (:func:`install`).

kombu emulates acknowledgement on Redis with bookkeeping of its own (workers/recovery.py): it
records every delivered message in the ``unacked`` hash and its index (``append``) and
removes it again once the task ran (``ack``), each in a MULTI/EXEC transaction on a client
made for the occasion: two blocking round trips per message in the worker's main process,
45 % of its busy time under load (py-spy, sync predict at 1 and 16 connections). Here:

- an acknowledgement takes effect in memory at once and reaches Redis with the next message's
  bookkeeping, in the same round trip; when no message comes, a timer sends it within
  ``ACK_DELAY`` seconds (and closing the channel sends it first);
- the bookkeeping goes out on one connection of the channel's, without MULTI/EXEC and
  without waiting: its replies are read before the next send (or by that timer), so a
  message goes on to its pool process one round trip sooner (sync p50 at one connection
  2.27 -> 2.12 ms).

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
        self._pending: list[str] = []  # acknowledged in memory, not yet sent to Redis
        self._unread = 0  # replies of commands sent on ``_connection``, not read yet
        self._connection = None
        self._pool = None  # the one ``_connection`` came from
        self._timer = None

    # -- one connection: commands go out at once, their replies are read before the next ----
    def _send(self, commands: list[tuple]) -> None:
        """Send ``commands`` without waiting for their replies: the message goes on to the pool
        process meanwhile (~0.1-0.15 ms sooner, measured at one connection). The replies are
        read before the next send, or by the timer."""
        self._read_replies()
        if self._connection is None:
            self._pool = self.channel.pool
            self._connection = self._pool.get_connection()
        connection = self._connection
        try:
            connection.send_packed_command(connection.pack_commands(commands))
        except Exception:
            self._drop_connection()
            raise
        self._unread += len(commands)
        self._schedule()

    def _read_replies(self) -> None:
        unread, self._unread = self._unread, 0
        errors = []
        for _ in range(unread):
            try:
                self._connection.read_response()
            except redis.exceptions.ReadOnlyError:  # a failover made it a replica: reconnect
                self._drop_connection()
                raise
            except redis.ResponseError as exc:  # Redis refused one command (out of memory)
                errors.append(exc)
            except Exception:
                self._drop_connection()
                raise
        if errors:
            logger.warning(
                "kombu's unacked bookkeeping: {} command(s) refused, the first: {}",
                len(errors),
                errors[0],
            )

    def _drop_connection(self) -> None:
        connection, self._connection, self._unread = self._connection, None, 0
        if connection is not None:
            connection.disconnect()
            self._pool.release(connection)

    def _schedule(self) -> None:
        """Within ``ACK_DELAY``: the held acknowledgements go and every reply is read."""
        if self._timer is not None:
            return
        loop = get_event_loop()
        if loop is None:  # no event loop (a synchronous consumer): at once
            self.flush()
        else:
            self._timer = loop.call_later(ACK_DELAY, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        try:
            self.flush()
        except redis.RedisError as exc:  # Redis away: the next message or close tries again
            logger.warning("{} acknowledgement(s) not sent yet: {!r}", len(self._pending), exc)

    def _commands(self, appended: tuple | None = None) -> tuple[list[tuple], list[str]]:
        commands = []
        if appended is not None:
            tag, raw = appended
            commands += [
                ("ZADD", self.unacked_index_key, time(), tag),
                ("HSET", self.unacked_key, tag, raw),
            ]
        tags, self._pending = self._pending, []
        if tags:
            commands += [("ZREM", self.unacked_index_key, *tags), ("HDEL", self.unacked_key, *tags)]
        return commands, tags

    # -- kombu's QoS ------------------------------------------------------------------------
    def append(self, message, delivery_tag):
        delivery = message.delivery_info
        raw = dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
        commands, tags = self._commands((delivery_tag, raw))
        try:
            self._send(commands)
        except Exception:
            self._pending[:0] = tags  # the next message or the timer tries them again
            raise
        virtual.QoS.append(self, message, delivery_tag)

    def ack(self, delivery_tag):
        virtual.QoS.ack(self, delivery_tag)
        self._pending.append(delivery_tag)
        self._schedule()

    def flush(self) -> None:
        """Send the acknowledgements still held in memory and read every reply.

        A channel closed meanwhile (the connection to Redis was lost and Celery made a new
        one) sends nothing: its held acknowledgements come back by the sweep, their jobs
        answered (the acknowledgement of a task that ended after the reconnect arrives here)."""
        if self.channel.connection is None:
            if self._pending:
                left = len(self._pending)
                logger.warning("{} acknowledgement(s) of a closed channel left to the sweep", left)
            self._pending.clear()
            return
        commands, tags = self._commands()
        if commands:
            try:
                self._send(commands)
            except Exception:
                self._pending[:0] = tags
                raise
        self._read_replies()

    def restore_unacked(self, client=None):
        """At close: the held acknowledgements first. With the connection torn down already
        (workers/recovery.py ``guard_restore_on_close``) they come back by the sweep, their
        jobs answered. kombu has disconnected the channel's connections already: the replies
        still unread went with ours, not the commands, which Redis has run."""
        self._drop_connection()
        transport = self.channel.connection
        if not (transport is not None and transport.client is None):
            try:
                self.flush()
            except redis.RedisError as exc:
                logger.warning("{} acknowledgement(s) not sent: {!r}", len(self._pending), exc)
        self._pending.clear()
        self._drop_connection()
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

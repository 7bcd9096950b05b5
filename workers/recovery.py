"""A live worker node renews its in-flight messages, so a dead node's come back within seconds.

kombu's Redis transport keeps every delivered, unacknowledged message in the hash ``unacked``
(delivery tag -> [payload, exchange, routing key]) and its delivery time in the sorted set
``unacked_index``; every consuming node sweeps that index each second and puts back on its
queue every message delivered more than ``worker.visibility_timeout`` ago. Alone, that
timeout had to outlast the longest task (a 30-minute retrain), so the messages of a node
killed with SIGKILL (OOM, a lost VM) came back after an hour, when their jobs had expired.

So each node's main process renews, every ``worker.heartbeat_seconds``, the delivery time of
every message it holds (received, prefetched or running), as SQS's ChangeMessageVisibility
does: a live node's messages never look old however long they run, and the visibility
timeout can be short. A dead node's messages stop being renewed, and the next sweep of any
live node (or of its replacement, which sweeps at start) puts them back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import redis
from loguru import logger

from core.redis import sync_client
from core.settings import Settings

# kombu's key names, set explicitly in the transport options (workers/config.py).
UNACKED_KEY = "unacked"
UNACKED_INDEX_KEY = "unacked_index"
UNACKED_MUTEX_KEY = "unacked_mutex"

# KEYS: the unacked hash, its index. ARGV: now, then delivery tags. Renews the tags still
# unacknowledged (XX: never re-adds one), returns the others: acknowledged or put back.
RENEW_SCRIPT = """
local gone = {}
for i = 2, #ARGV do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then
    redis.call('ZADD', KEYS[2], 'XX', ARGV[1], ARGV[i])
  else
    gone[#gone + 1] = ARGV[i]
  end
end
return gone
"""


# KEYS: the unacked index. ARGV: delivery tags. Ages the tags still in the index (XX) so that
# the next sweep of any node puts their messages back at once.
GIVE_BACK_SCRIPT = """
for i = 1, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', 0, ARGV[i])
end
return #ARGV
"""


def held_messages() -> dict[str, str]:
    """Delivery tag -> task id of each message this node holds, from Celery's worker state.

    ``state.requests`` lists a request from its receipt (prefetched ones too) until just
    before it is acknowledged, and forgets the ones Celery gives up on when the broker
    connection is lost: those can no longer be acknowledged and must come back by the sweep.
    ``list(dict.values())`` copies in one C call, so the event loop cannot change it midway.
    """
    from celery.worker import state

    requests = list(state.requests.values())
    return {r.message.delivery_tag: r.id for r in requests if r.message.delivery_tag}


class Renewer:
    """Renews the delivery time of the messages ``held()`` names, every ``interval`` seconds:
    one script call, 0.3 ms for six messages (measured on this machine); none when idle."""

    def __init__(
        self,
        client: redis.Redis,
        interval: float,
        held: Callable[[], dict[str, str]] = held_messages,
        clock: Callable[[], float] = time.time,
    ):
        self.interval = interval
        self._script = client.register_script(RENEW_SCRIPT)
        self._held, self._clock = held, clock
        self._stop = threading.Event()

    def renew(self, tags: list[str]) -> list[str]:
        """Renew ``tags`` to now (kombu's clock: the node's ``time.time()``); return the gone."""
        if not tags:
            return []
        gone = self._script(keys=[UNACKED_KEY, UNACKED_INDEX_KEY], args=[self._clock(), *tags])
        return [tag.decode() if isinstance(tag, bytes) else tag for tag in gone]

    def renew_held(self) -> list[str]:
        """One round; warn about messages put back on their queue while this node runs them."""
        gone = self.renew(list(self._held()))
        still_held = self._held() if gone else {}
        for tag in gone:
            if tag in still_held:  # not acknowledged meanwhile: a sweep took it from us
                logger.warning(
                    "message of task {} was put back on its queue while this node holds it "
                    "(renewed later than worker.visibility_timeout): it may run twice",
                    still_held[tag],
                )
        return gone

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.renew_held()
            except Exception as exc:  # Redis away (kombu cannot sweep either), or a bug:
                # the thread must live on, or this node's running messages get redelivered
                logger.warning("renewing in-flight messages failed: {!r}", exc)

    def start(self) -> Renewer:
        threading.Thread(target=self.run, name="renew-messages", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()


RENEWER: dict[str, Renewer] = {}


def start_renewer(settings: Settings) -> Renewer:
    """The worker node's main process, once (``worker_ready``): a daemon thread with its own
    client. A thread does not survive the pool's forks, and its client is never used there."""
    if "node" not in RENEWER:
        client = sync_client(settings.redis_url)
        RENEWER["node"] = Renewer(client, settings.worker.heartbeat_seconds).start()
    return RENEWER["node"]


def stop_renewer() -> None:
    renewer = RENEWER.pop("node", None)
    if renewer is not None:
        renewer.stop()


def give_back(client: redis.Redis, held: Callable[[], dict[str, str]] = held_messages) -> int:
    """Before a node's process is replaced (workers/pool.py): its messages, which no one will
    acknowledge now, go back on their queues at the next sweep (a second) rather than after
    ``worker.visibility_timeout``. Returns how many."""
    tags = list(held())
    return client.eval(GIVE_BACK_SCRIPT, 1, UNACKED_INDEX_KEY, *tags) if tags else 0


def guard_restore_on_close() -> None:
    """Let a channel whose connection is already torn down skip kombu's restore at close.

    When the broker connection dies, Celery collects the connection (its transport forgets
    the connection's settings) and then closes it; closing the channel puts the node's
    unacknowledged messages back on their queues, which needs a new connection pool built
    from those settings: AttributeError, "Unrecoverable error", the worker exits (seen in
    one of the first runs of tests/integration/test_sentinel.py, kombu 5.7). Skipped, those
    messages stay in ``unacked`` and come back by the sweep once no node renews them, as a
    dead node's do.
    """
    from kombu.transport import redis as kombu_redis

    original = kombu_redis.QoS.restore_unacked
    if getattr(original, "guarded", False):
        return

    def restore_unacked(self, client=None):
        transport = self.channel.connection
        if client is None and transport is not None and transport.client is None:
            logger.warning(
                "connection to Redis lost: {} unacknowledged message(s) left to the sweep",
                len(self._delivered),
            )
            return None
        return original(self, client)

    restore_unacked.guarded = True
    kombu_redis.QoS.restore_unacked = restore_unacked

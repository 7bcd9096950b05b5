"""A lock with a lease in Redis: single-flight training that a crash cannot leave stuck.

The holder renews the lease from a thread while it works; if it dies the lease runs out and
the next caller gets the lock. Only the owner may renew or release it: a compare-and-set in
a WATCH/MULTI transaction (no Lua, so it runs on any Redis and on fakeredis in unit tests).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import redis


class LeaseLock:
    def __init__(self, client: redis.Redis, key: str, owner: str, lease_seconds: float):
        self.client = client
        self.key = key
        self.owner = owner
        self.lease_ms = max(1, int(lease_seconds * 1000))

    def acquire(self) -> bool:
        """Take the lock, or confirm we already hold it (the gateway may have taken it for us)."""
        if self.client.set(self.key, self.owner, nx=True, px=self.lease_ms):
            return True
        return self.renew()

    def holder(self) -> str | None:
        value = self.client.get(self.key)
        return value.decode() if value else None

    def renew(self) -> bool:
        return self._if_owner(lambda pipe: pipe.pexpire(self.key, self.lease_ms))

    def release(self) -> bool:
        return self._if_owner(lambda pipe: pipe.delete(self.key))

    def _if_owner(self, command) -> bool:
        """Run ``command`` only while we hold the key; a concurrent change aborts it."""
        with self.client.pipeline() as pipe:
            try:
                pipe.watch(self.key)
                if pipe.get(self.key) != self.owner.encode():
                    return False
                pipe.multi()
                command(pipe)
                return bool(pipe.execute()[0])
            except redis.WatchError:  # the key changed between GET and EXEC: not ours now
                return False

    @contextlib.contextmanager
    def renewing(self) -> Iterator[None]:
        """Renew the lease every third of its length until the block ends, then release."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(self.lease_ms / 3000):
                with contextlib.suppress(redis.RedisError):
                    self.renew()

        thread = threading.Thread(target=loop, name="lease-renewal", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)
            with contextlib.suppress(redis.RedisError):
                self.release()

"""A lock with a lease in Redis: single-flight training that a crash cannot leave stuck.

The holder renews the lease from a thread while it works; if it dies the lease runs out and
the next caller gets the lock. Only the owner may renew or release it (compare-and-set in Lua).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import redis

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class LeaseLock:
    def __init__(self, client: redis.Redis, key: str, owner: str, lease_seconds: float):
        self.client = client
        self.key = key
        self.owner = owner
        self.lease_ms = int(lease_seconds * 1000)

    def acquire(self) -> bool:
        """Take the lock, or confirm we already hold it (the gateway may have taken it for us)."""
        if self.client.set(self.key, self.owner, nx=True, px=self.lease_ms):
            return True
        return self.renew()

    def holder(self) -> str | None:
        value = self.client.get(self.key)
        return value.decode() if value else None

    def renew(self) -> bool:
        return bool(self.client.eval(_RENEW, 1, self.key, self.owner, self.lease_ms))

    def release(self) -> bool:
        return bool(self.client.eval(_RELEASE, 1, self.key, self.owner))

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

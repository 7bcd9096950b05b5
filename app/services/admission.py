"""Admission: may a new predict job be queued now? Backpressure before Redis fills up.

The gateway's watcher (app/state.py) reads the predict queue's length and size and Redis's
memory every 0.25 s; the submitter updates the length after each write. A request is then
judged on these readings, with no Redis call of its own:

- 429 (retry later) at ``api.max_queue_depth`` queued messages, at ``api.max_queue_bytes`` of
  queued messages (a stream of 1,000-row jobs fills Redis long before it reaches the message
  limit), or once Redis holds ``api.memory_backpressure`` of its ``maxmemory``;
- 503 once it holds :data:`MEMORY_REFUSE` of it: the rest is headroom for the workers, which
  must still record deliveries and write the results of the jobs already accepted (at 100 %
  Redis refuses them and accepted jobs would be lost).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.exceptions

from app.errors import TooManyRequests

MEMORY_REFUSE = 0.9
MIB = 1024 * 1024


@dataclass
class Admission:
    max_queue_depth: int
    max_queue_bytes: int
    memory_backpressure: float
    retry_after: int
    queue_depth: int = 0  # predict messages waiting
    queue_bytes: int = 0  # their size in Redis (MEMORY USAGE, sampled)
    used_memory: int = 0
    maxmemory: int = 0  # 0: Redis has no limit, memory is not judged

    def check(self) -> None:
        """Raise TooManyRequests (429) or OutOfMemoryError (503) when a job must wait."""
        self.check_memory()
        if self.queue_depth >= self.max_queue_depth:
            self._refuse(
                f"the predict queue holds {self.queue_depth} messages "
                f"(limit {self.max_queue_depth})"
            )
        if self.queue_bytes >= self.max_queue_bytes:
            self._refuse(
                f"the predict queue holds {self.queue_bytes / MIB:.1f} MiB "
                f"(limit {self.max_queue_bytes / MIB:.1f} MiB)"
            )

    def check_memory(self) -> None:
        """The memory part of :meth:`check`, for writes other than predict jobs (feedback):
        503 near maxmemory, 429 past the backpressure share."""
        if self.maxmemory and self.used_memory >= MEMORY_REFUSE * self.maxmemory:
            raise redis.exceptions.OutOfMemoryError("Redis is near maxmemory (OOM headroom)")
        if self.maxmemory and self.used_memory >= self.memory_backpressure * self.maxmemory:
            self._refuse(
                f"Redis holds {self.used_memory / self.maxmemory:.0%} of its maxmemory "
                f"(backpressure from {self.memory_backpressure:.0%})"
            )

    def _refuse(self, why: str) -> None:
        raise TooManyRequests(f"{why}; retry later", self.retry_after)

    def observe_memory(self, info: dict) -> None:
        self.used_memory = int(info.get("used_memory") or 0)
        self.maxmemory = int(info.get("maxmemory") or 0)

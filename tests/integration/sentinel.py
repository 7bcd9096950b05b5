"""Redis with Sentinel for integration tests: a primary, a replica and three sentinels, each a
real redis-server on a free port of 127.0.0.1 (scripts/processes.py's RedisServer).

:class:`SentinelGroup` stands in for a Stack's RedisServer: its ``url`` is a ``sentinel://``
URL, its ``client()`` follows the primary wherever the sentinels say it is.
"""

from __future__ import annotations

from pathlib import Path

import redis

from core.redis import sync_client
from scripts.processes import RedisServer, wait_until

MASTER = "mymaster"
DOWN_AFTER_MS = 1000  # a primary silent this long is down (Sentinel's default: 30 s)


class SentinelServer(RedisServer):
    """``redis-server <file> --sentinel``: Sentinel rewrites its configuration file, so each
    sentinel gets its own, written before it starts."""

    def __init__(self, workdir: Path, primary_port: int):
        super().__init__(workdir)
        self.primary_port = primary_port

    def command(self) -> list[str]:
        config = self.workdir / "sentinel.conf"
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.workdir}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {self.primary_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER} 10000\n"
        )
        return [self.exe, str(config), "--sentinel"]


class SentinelGroup:
    """The primary, its replica and three sentinels (quorum 2), started and stopped together."""

    def __init__(self, workdir: Path):
        workdir = Path(workdir)
        self.primary = RedisServer(workdir / "primary")
        self.replica = RedisServer(
            workdir / "replica", extra=["--replicaof", "127.0.0.1", str(self.primary.port)]
        )
        self.sentinels = [
            SentinelServer(workdir / f"sentinel{i}", self.primary.port) for i in range(3)
        ]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"sentinel://{hosts}/{MASTER}/0"

    def client(self) -> redis.Redis:
        return sync_client(self.url)

    def start(self) -> SentinelGroup:
        self.primary.start()
        self.replica.start()
        wait_until(self._replica_synced, 15, "the replica's first sync")
        for sentinel in self.sentinels:
            sentinel.start()
        wait_until(self._sentinels_see_replica, 15, "three sentinels that know the replica")
        return self

    def _replica_synced(self) -> bool:
        return self.replica.client().info("replication")["master_link_status"] == "up"

    def _sentinels_see_replica(self) -> bool:
        for sentinel in self.sentinels:
            client = sentinel.client()
            if not client.sentinel_slaves(MASTER):
                return False
            if int(client.sentinel_master(MASTER)["num-other-sentinels"]) < 2:
                return False
        return True

    def master_port(self) -> int:
        """The primary's port, as the first sentinel that answers gives it."""
        for sentinel in self.sentinels:
            try:
                return int(sentinel.client().sentinel_get_master_addr_by_name(MASTER)[1])
            except redis.RedisError:
                continue
        raise RuntimeError("no sentinel answers")

    def kill_primary(self) -> None:
        """SIGKILL the primary, as a crash would: no goodbye to clients or the replica."""
        self.primary.kill()

    def wait_failover(self, timeout: float = 20) -> None:
        wait_until(
            lambda: self.master_port() == self.replica.port, timeout, "the sentinels' failover"
        )
        wait_until(self._replica_promoted, timeout, "the replica to become the primary")

    def _replica_promoted(self) -> bool:
        return self.replica.client().info("replication")["role"] == "master"

    def stop(self) -> None:
        for server in (*self.sentinels, self.replica, self.primary):
            server.stop()

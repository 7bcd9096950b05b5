"""After a Redis failover, fail the predict jobs whose message the new primary never got.

Redis replicates asynchronously: when the primary dies, the replica the sentinels promote
may miss its last writes. A job whose record and message were both lost is unknown (404).
One whose record survived but whose message did not (a worker's BRPOP reached the replica,
kombu's copy of the message in ``unacked`` did not) would stay PENDING until it expires:
nothing would ever run it; nor would the job a worker was running when the primary died
(Celery acknowledges its message without running it, see :func:`watch`). So every worker
node watches the primary's ``run_id``; the first node to see a new one looks, under a lock,
for PENDING predict jobs whose message is in no queue and in no ``unacked`` entry, looks
again after ``SETTLE`` seconds (a message moves between those places in a few
milliseconds), and marks the ones still unaccounted for FAILURE ``lost_in_failover`` (their
rows are not in the record: the client resubmits). Each look reads every job record (SCAN):
a cost paid three times per failover, which is rare.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

import orjson
import redis
from loguru import logger

from core.jobs import PENDING, PREDICT, job_key, predict_failure
from core.messages import RESULTS_CHANNEL, TRAIN_QUEUE, pack_results
from core.redis import sync_client
from core.settings import redelivery_bound
from workers.recovery import UNACKED_KEY

PRIMARY_KEY = "mlops:primary"  # run_id of the primary the last audit (or first start) saw
LOCK_KEY = "mlops:failover-audit:{}"
SETTLE = 2.0
SCAN_COUNT = 1000

# KEYS: job keys. ARGV: their FAILURE records. Replaces only records still PENDING.
FAIL_SCRIPT = """
local failed = {}
for i = 1, #KEYS do
  local raw = redis.call('GET', KEYS[i])
  if raw and cjson.decode(raw)['status'] == 'PENDING' then
    redis.call('SET', KEYS[i], ARGV[i], 'KEEPTTL')
    failed[#failed + 1] = i
  end
end
return failed
"""


def new_primary(client: redis.Redis) -> str | None:
    """The primary's run_id when it is not the one recorded (a failover, or a restart);
    None when it is, or when none was recorded yet (then this one is)."""
    run_id = client.info("server")["run_id"]
    seen = client.get(PRIMARY_KEY)
    if seen is None:
        client.set(PRIMARY_KEY, run_id, nx=True)
        return None
    return None if seen.decode() == run_id else run_id


def _task_ids(payloads: Iterable[bytes]) -> set[str]:
    ids = set()
    for raw in payloads:
        try:
            message = orjson.loads(raw)
            if isinstance(message, list):  # an unacked entry: [payload, exchange, routing key]
                message = orjson.loads(message[0]) if isinstance(message[0], str) else message[0]
            ids.add(message["headers"]["id"])
        except (ValueError, KeyError, TypeError, IndexError):
            continue
    return ids


def _pending_records(client: redis.Redis) -> dict[str, dict]:
    """job id -> record, of every PENDING predict job."""
    found = {}
    for keys in _chunks(client.scan_iter(match=job_key("*"), count=SCAN_COUNT), SCAN_COUNT):
        for raw in client.mget(keys):
            record = orjson.loads(raw) if raw else None
            if record and record.get("kind") == PREDICT and record.get("status") == PENDING:
                found[record["job_id"]] = record
    return found


def _chunks(items: Iterable, size: int) -> Iterable[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def unaccounted(client: redis.Redis, queues: list[str], only: set[str] | None = None) -> dict:
    """job id -> record of the PENDING predict jobs whose message is in no queue (those of
    ``queues`` and the ones the records name) and not in ``unacked``.

    A message is acknowledged only after its jobs' results are written (acks late), so a
    job whose message is gone and whose record is still PENDING will never be answered.
    """
    records = _pending_records(client)
    if only is not None:
        records = {job_id: r for job_id, r in records.items() if job_id in only}
    if not records:
        return {}
    present = _task_ids(client.hvals(UNACKED_KEY))
    for queue in sorted({*queues, *(r["queue"] for r in records.values() if r.get("queue"))}):
        present |= _task_ids(client.lrange(queue, 0, -1))
    return {j: r for j, r in records.items() if r.get("task_id") not in present}


def audit(
    client: redis.Redis, queues: list[str], sleep: Callable[[float], object] = time.sleep
) -> list[str]:
    """Mark FAILURE the PENDING predict jobs whose message is lost; their ids."""
    suspects = unaccounted(client, queues)
    if not suspects:
        return []
    sleep(SETTLE)
    lost = unaccounted(client, queues, only=set(suspects))
    if not lost:
        return []
    ids = list(lost)
    failures = [
        orjson.dumps(
            predict_failure(
                lost[job_id],
                "lost_in_failover",
                "Redis failed over before this job's message reached the new primary, or "
                "while a worker ran it; submit it again",
            )
        )
        for job_id in ids
    ]
    done = client.eval(FAIL_SCRIPT, len(ids), *map(job_key, ids), *failures)
    failed = [(ids[int(i) - 1], failures[int(i) - 1]) for i in done]
    if failed:
        client.publish(RESULTS_CHANNEL, pack_results(failed))  # wakes waiting requests
    return [job_id for job_id, _ in failed]


def check(
    client: redis.Redis,
    queues: list[str],
    node: str,
    rounds: tuple[float, ...] = (0.0,),
    sleep: Callable[[float], object] = time.sleep,
) -> list[str]:
    """After a change of primary, the first node to see it audits at each of ``rounds``
    (seconds after it saw it); the ids it failed."""
    run_id = new_primary(client)
    if run_id is None or not client.set(LOCK_KEY.format(run_id), node, nx=True, ex=300):
        return []
    logger.warning("Redis primary changed (run_id {}): looking for jobs it lost", run_id)
    failed, waited = [], 0.0
    for at in rounds:
        sleep(at - waited)
        waited = at
        failed += audit(client, queues, sleep)
    client.set(PRIMARY_KEY, run_id)
    if failed:
        logger.warning(
            "{} predict job(s) lost in the failover marked FAILURE: {}",
            len(failed),
            ",".join(failed),
        )
    return failed


def watch(client: redis.Redis, queues: list[str], node: str, settings) -> None:
    """The loop of the node's watcher thread: Redis away is the normal case here.

    It audits at once, then once the messages a worker gave up with the lost connection are
    back on their queues (the redelivery bound) and twice that later: Celery acknowledges
    the message a worker was running when the primary died, without running it, after it
    failed to cancel it (the known limit of docs/guarantees.md).
    """
    bound = redelivery_bound(settings)
    rounds = (0.0, bound + SETTLE, 3 * bound)
    while True:
        time.sleep(settings.worker.heartbeat_seconds)
        try:
            check(client, queues, node, rounds)
        except Exception as exc:
            logger.debug("failover check failed: {!r}", exc)


def start_watch(settings, node: str) -> threading.Thread:
    """The worker node's main process, once (``worker_ready``): a daemon thread, own client."""
    from workers.config import consumed_queues

    predict = [q for q in consumed_queues(settings) if q != TRAIN_QUEUE]
    args = (sync_client(settings.redis_url), predict, node, settings)
    thread = threading.Thread(target=watch, args=args, name="failover-watch", daemon=True)
    thread.start()
    return thread

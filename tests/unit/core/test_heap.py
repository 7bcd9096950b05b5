"""core.heap: start-up objects leave the collector's reach; collection itself stays on."""

from __future__ import annotations

import gc

from core.heap import freeze_startup_heap


def test_freeze_moves_live_objects_out_of_collection_and_keeps_the_collector_on():
    survivor = [object() for _ in range(1000)]
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() >= len(survivor)
        assert gc.isenabled()
        # Objects made afterwards are still collected: a cycle created now is found.
        cycle = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()

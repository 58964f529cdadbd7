"""MemoryGuard's heap trimming: when queues drain, and then at most every TRIM_INTERVAL."""

from __future__ import annotations

import pytest

from onionmesh.proto.scheduler import QueueBudget
from onionmesh.runtime.transport import memory_guard as oom

pytestmark = pytest.mark.skipif(oom._malloc_trim is None, reason="needs glibc's malloc_trim")


def test_heap_trimmed_when_queues_drain_not_on_every_check() -> None:
    now = [1000.0]
    budget = QueueBudget(100 * 1024 * 1024)
    guard = oom.MemoryGuard(
        budget, lambda: [], lambda: [], lambda link, cid: None, lambda circuit: None, clock=lambda: now[0]
    )

    assert guard.check() == 0 and guard.trims == 1  # idle at start: trimmed once
    now[0] += 1
    guard.check()
    assert guard.trims == 1  # still idle, interval not over: nothing to do
    budget.used = 2 * oom.TRIM_BELOW  # a burst is queued: never trimmed under load
    now[0] += 1
    guard.check()
    assert guard.trims == 1
    budget.used = 0  # the burst drained: trimmed at once, interval or not
    now[0] += 1
    guard.check()
    assert guard.trims == 2
    now[0] += oom.TRIM_INTERVAL  # idle for a whole interval: trimmed again
    guard.check()
    assert guard.trims == 3

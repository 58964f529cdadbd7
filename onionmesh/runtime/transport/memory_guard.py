"""When queued bytes pass a process's limit, destroy the circuits holding the oldest data.

Tor's MaxMemInQueues (tor-spec §8.1): a circuit's staleness is the age of the oldest byte it
has waiting anywhere, in a link's circuit queue or a stream's socket buffer, and circuits go
oldest first until the total is back under RECOVER_TO of the limit.  Age, not size, is the
criterion because a circuit whose data does not move is the one whose peer stopped reading
(or never meant to), while a fast circuit with a big window keeps its queue young.

Not in this module: how a circuit is destroyed (the node's own teardown), what the limit is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from collections.abc import Callable, Hashable, Iterable

from onionmesh.proto.scheduler import QueueBudget
from onionmesh.runtime.transport.link import Link
from onionmesh.runtime.transport.stream_pump import StreamPump

RECOVER_TO = 0.9
DEFAULT_MAX_MEM_IN_QUEUES = 128 * 1024 * 1024
# Cells are 4 KiB objects from malloc's heap, which glibc keeps after they are freed: a burst of
# queued cells would otherwise stay in the process's RSS for good.  When the queues drain below
# TRIM_BELOW (and otherwise every TRIM_INTERVAL while they stay there), the heap's free pages go
# back to the kernel: a call of well under a millisecond on a relay's heap, at most once a check.
TRIM_BELOW = 1024 * 1024
TRIM_INTERVAL = 10.0


def _find_malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None elsewhere (musl, macOS): then memory is simply not trimmed."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim  # type: ignore[no-any-return]


_malloc_trim = _find_malloc_trim()


def reclaim(
    links: Iterable[Link],
    streams: Iterable[tuple[float, int, Hashable]],
    circuit_of: Callable[[Link, int], Hashable | None],
    destroy: Callable[[Hashable], None],
    limit: float,
) -> int:
    """Destroy circuits, stalest first, until queued bytes are at most RECOVER_TO × limit.

    `streams` lists (since, bytes, circuit) for stream buffers holding data; `circuit_of` maps a
    link's circuit id to the circuit object `destroy` takes.  Returns how many were destroyed.
    """
    links = list(links)
    oldest: dict[Hashable, float] = {}
    size: dict[Hashable, int] = {}
    for link in links:
        for since, circ_id in link.scheduler.oldest():
            circuit = circuit_of(link, circ_id)
            if circuit is None:
                continue
            oldest[circuit] = min(since, oldest.get(circuit, since))
            size[circuit] = size.get(circuit, 0) + link.scheduler.queued_bytes(circ_id)
    for since, n, circuit in streams:
        oldest[circuit] = min(since, oldest.get(circuit, since))
        size[circuit] = size.get(circuit, 0) + n
    total = sum(size.values())
    destroyed = 0
    for circuit in sorted(oldest, key=oldest.__getitem__):
        if total <= RECOVER_TO * limit:
            break
        destroy(circuit)
        total -= size[circuit]
        destroyed += 1
    return destroyed


class MemoryGuard:
    """One process's queued bytes against its budget, and the policy that acts on them.

    Circuit queues count in the budget as cells are queued; stream buffers grow without passing
    through a queue, so `check` (called every second) adds them up.  `links` and `streams` are
    read at each call: the node's links, and (circuit, its stream bridges) pairs.
    """

    def __init__(
        self,
        budget: QueueBudget,
        links: Callable[[], Iterable[Link]],
        streams: Callable[[], Iterable[tuple[Hashable, Iterable[StreamPump]]]],
        circuit_of: Callable[[Link, int], Hashable | None],
        destroy: Callable[[Hashable], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budget = budget
        self.clock = clock  # paces heap trims; injectable so tests need not patch `time`
        self._links, self._streams = links, streams
        self._circuit_of, self._destroy = circuit_of, destroy
        self._last_trim = 0.0
        self._was_queued = False
        self.trims = 0

    def _held_by_streams(self) -> list[tuple[float, int, Hashable]]:
        return [
            (bridge.buffered_since, n, circuit)
            for circuit, bridges in self._streams()
            for bridge in bridges
            if (n := bridge.buffered_bytes)
        ]

    def queued_bytes(self) -> int:
        """Circuit queues plus stream buffers: what the limit counts."""
        return self.budget.used + sum(n for _, n, _ in self._held_by_streams())

    def reclaim(self) -> int:
        """Destroy the stalest circuits until under RECOVER_TO of the limit; how many died."""
        return reclaim(
            self._links(), self._held_by_streams(), self._circuit_of, self._destroy, self.budget.limit
        )

    def check(self) -> int:
        """The periodic look at the whole total (stream buffers included); trims the heap when
        the queues are nearly empty."""
        queued = self.queued_bytes()
        if queued > self.budget.limit:
            return self.reclaim()
        now = self.clock()
        was_queued, self._was_queued = self._was_queued, queued >= TRIM_BELOW
        if self._was_queued or _malloc_trim is None:
            return 0
        if was_queued or now - self._last_trim >= TRIM_INTERVAL:
            _malloc_trim(0)
            self._last_trim = now
            self.trims += 1
        return 0

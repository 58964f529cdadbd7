"""When queued bytes pass a process's limit, destroy the circuits holding the oldest data.

Tor's MaxMemInQueues (tor-spec §8.1): a circuit's staleness is the age of the oldest byte it
has waiting anywhere, in a link's circuit queue or a stream's socket buffer, and circuits go
oldest first until the total is back under RECOVER_TO of the limit.  Age, not size, is the
criterion because a circuit whose data does not move is the one whose peer stopped reading
(or never meant to), while a fast circuit with a big window keeps its queue young.

Not in this module: how a circuit is destroyed (the node's own teardown), what the limit is.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable

from onionmesh.proto.scheduler import QueueBudget
from onionmesh.runtime.link import Link
from onionmesh.runtime.stream_bridge import StreamBridge

RECOVER_TO = 0.9
DEFAULT_MAX_MEM_IN_QUEUES = 128 * 1024 * 1024


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
        streams: Callable[[], Iterable[tuple[Hashable, Iterable[StreamBridge]]]],
        circuit_of: Callable[[Link, int], Hashable | None],
        destroy: Callable[[Hashable], None],
    ) -> None:
        self.budget = budget
        self._links, self._streams = links, streams
        self._circuit_of, self._destroy = circuit_of, destroy

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
        """The periodic look at the whole total (stream buffers included)."""
        return self.reclaim() if self.queued_bytes() > self.budget.limit else 0

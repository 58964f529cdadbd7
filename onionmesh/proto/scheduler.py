"""Which cell goes next on a link: per-circuit queues, EWMA priority, and the bytes they hold (sans-I/O).

Theory of operation.  Every relay cell a node wants to send on a link waits in its circuit's
queue; the link takes cells from the queues only as fast as the socket drains, so nothing
waits anywhere else.  The next cells come from the circuit that has sent the least recently,
by an exponentially weighted moving average of cells sent (Tor's EWMA circuit scheduling,
proposal 182 / tor-spec "circuitmux_ewma"): a circuit that only sends now and then (a shell,
a web page) goes ahead of a bulk download on the same link instead of waiting behind it.
Averages are kept in scaled units: a cell sent at time t counts 2^(t / half-life), which ranks
circuits exactly as decaying every average would, without touching idle ones.

Cells of link-level commands (CREATE, CREATED, DESTROY, PADDING) go ahead of all circuit
queues.  Each circuit queue has a cap (a peer that respects flow control never reaches it)
and every queued byte counts against a `QueueBudget` shared by the whole process, so that the
runtime can destroy the circuits holding the oldest data when memory runs short (Tor's
MaxMemInQueues).

Not in this module: sockets, timers, what to destroy (the runtime decides, with `oldest`).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Iterator

from onionmesh.proto.flow import CWND_MAX

EWMA_HALFLIFE = 30.0  # seconds (Tor's CircuitPriorityHalflife)
CIRCUIT_QUEUE_MAX_CELLS = CWND_MAX + 512  # a full window plus SENDMEs and slack; more is a violation
QUANTUM = 8  # cells taken from the chosen circuit before choosing again
_RESCALE_AFTER = 2.0**64


class QueueBudget:
    """Bytes waiting in circuit queues across a whole process, against a limit."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.used = 0

    def over(self) -> bool:
        return self.used > self.limit


class _CircuitQueue:
    __slots__ = ("cells", "ewma", "times")

    def __init__(self) -> None:
        self.cells: deque[bytes] = deque()
        self.times: deque[float] = deque()  # when each cell was queued
        self.ewma = 0.0


class LinkScheduler:
    """One link's outgoing cells, in the order they should go out."""

    def __init__(self, budget: QueueBudget | None = None, halflife: float = EWMA_HALFLIFE) -> None:
        self.budget = budget or QueueBudget(math.inf)
        self.halflife = halflife
        self.control: deque[bytes] = deque()
        self.queues: dict[int, _CircuitQueue] = {}
        self._active: list[tuple[float, int, int]] = []  # (ewma, seq, circ_id); stale entries skipped
        self._seq = 0
        self._epoch: float | None = None
        self.queued_cells = 0

    # --- input ----------------------------------------------------------------------------------
    def push(self, circ_id: int, cell: bytes, now: float) -> bool:
        """Queue a circuit's cell; False (and nothing queued) when that circuit's queue is full."""
        queue = self.queues.get(circ_id)
        if queue is None:
            queue = self.queues[circ_id] = _CircuitQueue()
        elif len(queue.cells) >= CIRCUIT_QUEUE_MAX_CELLS:
            return False
        if not queue.cells:
            self._activate(circ_id, queue)
        queue.cells.append(cell)
        queue.times.append(now)
        self.queued_cells += 1
        self.budget.used += len(cell)
        return True

    def push_control(self, cell: bytes) -> None:
        """A link-level cell: sent before any circuit's (they are few and small)."""
        self.control.append(cell)

    def drop(self, circ_id: int) -> int:
        """Forget a circuit (destroyed or gone): its queued cells are discarded. Returns bytes freed."""
        queue = self.queues.pop(circ_id, None)
        if queue is None:
            return 0
        freed = sum(len(c) for c in queue.cells)
        self.queued_cells -= len(queue.cells)
        self.budget.used -= freed
        return freed

    # --- output ---------------------------------------------------------------------------------
    def pop(self, max_cells: int, now: float) -> list[bytes]:
        """Up to `max_cells` cells: link-level first, then QUANTUM at a time from the circuit with
        the lowest average."""
        out: list[bytes] = []
        while self.control and len(out) < max_cells:
            out.append(self.control.popleft())
        while len(out) < max_cells and self._active:
            ewma, _, circ_id = heapq.heappop(self._active)
            queue = self.queues.get(circ_id)
            if queue is None or not queue.cells or queue.ewma != ewma:
                continue  # a stale entry: the circuit was dropped, emptied or re-ranked
            take = min(QUANTUM, max_cells - len(out), len(queue.cells))
            for _ in range(take):
                cell = queue.cells.popleft()
                queue.times.popleft()
                self.budget.used -= len(cell)
                out.append(cell)
            self.queued_cells -= take
            queue.ewma += take * self._scale(now)
            if queue.cells:
                self._activate(circ_id, queue)
        return out

    def __len__(self) -> int:
        return len(self.control) + self.queued_cells

    def oldest(self) -> Iterator[tuple[float, int]]:
        """(time its oldest cell was queued, circ_id) for every circuit with cells waiting."""
        for circ_id, queue in self.queues.items():
            if queue.times:
                yield queue.times[0], circ_id

    def queued_bytes(self, circ_id: int) -> int:
        queue = self.queues.get(circ_id)
        return 0 if queue is None else sum(len(c) for c in queue.cells)

    # --- EWMA -----------------------------------------------------------------------------------
    def _activate(self, circ_id: int, queue: _CircuitQueue) -> None:
        self._seq += 1
        heapq.heappush(self._active, (queue.ewma, self._seq, circ_id))

    def _scale(self, now: float) -> float:
        if self._epoch is None:
            self._epoch = now
        scale = 2.0 ** ((now - self._epoch) / self.halflife)
        if scale > _RESCALE_AFTER:  # renormalise everything to a new epoch (every ~32 half-lives)
            for queue in self.queues.values():
                queue.ewma /= scale
            self._epoch = now
            self._active = []
            for circ_id, queue in self.queues.items():
                if queue.cells:
                    self._activate(circ_id, queue)
            scale = 1.0
        return scale

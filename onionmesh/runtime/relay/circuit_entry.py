"""One circuit at a relay, as the runtime holds it: the crypto state machine, the slot on the
link toward the client, what the circuit continues into, its exit streams.

`onward` is where cells this hop does not recognize go: a `LinkOnward` (the next relay, after
EXTEND) or a `Join` (another circuit at this relay, spliced end to end by a handler, as a
rendezvous point will).  The forwarding path only ever calls `Onward.wake` and `Onward.close`:
a new kind of continuation is a new class, not a special case in the switch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from onionmesh.proto.relay_circuit import RelayCircuit
from onionmesh.runtime.transport.link import CircuitSlot, Link
from onionmesh.runtime.transport.stream_pump import StreamGroup
from onionmesh.wire.cell import Cell, CellCommand, DestroyReason


class Onward(Protocol):
    """What a circuit continues into beyond this relay."""

    def wake(self) -> None:
        """The circuit has forward cells: take them on."""

    def close(self, reason: DestroyReason, came_from: Link[RelayCircuitEntry] | None) -> None:
        """The circuit is destroyed: end what lies beyond (unless that is where it came from)."""


class RelayCircuitEntry:
    """A relay's circuit; every link slot of it holds this same object."""

    # __weakref__: relay.dht_answers keeps what it learned per circuit in a WeakKeyDictionary
    __slots__ = ("__weakref__", "circ", "created_waiter", "dead", "onward", "prev", "streams")

    def __init__(self, circ: RelayCircuit, link: Link[RelayCircuitEntry], circ_id: int) -> None:
        self.circ = circ
        self.prev: CircuitSlot[RelayCircuitEntry] = link.attach(circ_id, self, self._backward_cells)
        self.onward: Onward | None = None
        self.created_waiter: asyncio.Future[bytes] | None = None
        self.streams = StreamGroup()  # exit streams, when this relay is the circuit's last hop
        self.dead = False
        circ.on_output = self.wake

    def _backward_cells(self) -> list[Cell]:
        cid = self.prev.circ_id
        return [Cell(cid, CellCommand.RELAY, payload) for payload in self.circ.take_backward()]

    def wake(self) -> None:
        """The state machine queued cells: both directions' takers look (a no-op where none wait)."""
        if self.circ.backward_out:
            self.prev.wake()
        if self.circ.forward_out and self.onward is not None:
            self.onward.wake()

    def came_from_prev(self, link: Link[RelayCircuitEntry], circ_id: int) -> bool:
        return self.prev.link is link and self.prev.circ_id == circ_id


class LinkOnward:
    """The circuit continues on a link to the next relay (after EXTEND)."""

    __slots__ = ("slot",)

    def __init__(
        self,
        entry: RelayCircuitEntry,
        link: Link[RelayCircuitEntry],
        circ_id: int,
        sent: Callable[[int], None] | None = None,
    ) -> None:
        """`sent(n)` is told how many cells went onto the link (the per-peer byte counts)."""

        def outbox() -> list[Cell]:
            cells = _forward_cells(entry, circ_id)
            if sent is not None and cells:
                sent(len(cells))
            return cells

        self.slot = link.attach(circ_id, entry, outbox)

    def wake(self) -> None:
        self.slot.wake()

    def close(self, reason: DestroyReason, came_from: Link[RelayCircuitEntry] | None) -> None:
        self.slot.detach(None if self.slot.link is came_from else reason)


def _forward_cells(entry: RelayCircuitEntry, circ_id: int) -> list[Cell]:
    return [Cell(circ_id, command, payload) for command, payload in entry.circ.take_forward()]


Destroy = Callable[[RelayCircuitEntry, DestroyReason], None]


class Join:
    """Two circuits at this relay joined end to end: what one sends forward (and this hop does not
    recognize) goes back toward the other's client under the other's backward layer.  Destroying
    either destroys both.  `destroy` is the switch's teardown."""

    __slots__ = ("destroy", "other", "this")

    def __init__(
        self,
        this: RelayCircuitEntry,
        other: RelayCircuitEntry,
        destroy: Destroy,
    ) -> None:
        self.this, self.other, self.destroy = this, other, destroy

    @staticmethod
    def splice(a: RelayCircuitEntry, b: RelayCircuitEntry, destroy: Destroy) -> None:
        """Join `a` and `b` (both must end here and continue nowhere yet)."""
        for this, other in ((a, b), (b, a)):
            this.onward = Join(this, other, destroy)
            this.circ.join()

    def wake(self) -> None:
        if self.other.dead:
            self.this.circ.take_forward()
            return
        for _command, payload in self.this.circ.take_forward():
            self.other.circ.handle_backward(payload)  # queues it for the other's client: it wakes

    def close(self, reason: DestroyReason, came_from: Link[RelayCircuitEntry] | None) -> None:
        self.destroy(self.other, reason)

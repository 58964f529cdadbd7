"""The rendezvous point: where a client's circuit and a service's circuit are joined end to end.

Registered at the switch's handler seam:

* ESTABLISH_RENDEZVOUS (a 20-byte cookie) on a circuit that ends here: the circuit waits under
  that cookie (answered with RENDEZVOUS_ESTABLISHED).  A cookie already waiting is refused.
* RENDEZVOUS1 (cookie, HANDSHAKE_INFO) on another circuit: the waiting circuit gets RENDEZVOUS2
  (HANDSHAKE_INFO) under its own layer, then the two are spliced with `circuit_entry.Join`: from
  then on what either end sends past this hop reaches the other end, and destroying one destroys
  both.  An unknown or expired cookie destroys the sender's circuit (the service tries again).
* Cookies expire after COOKIE_LIFETIME; at most MAX_WAITING circuits wait at once.  Every refusal
  is a clean DESTROY of that one circuit, counted.  The rendezvous point sees two circuits'
  previous hops, never who is at their ends.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable

from onionmesh.errors import RemoteProtocolError
from onionmesh.runtime.relay.circuit_entry import Join, RelayCircuitEntry
from onionmesh.runtime.relay.switch import Handler
from onionmesh.wire.cell import DestroyReason
from onionmesh.wire.hs_cells import EstablishRendezvous, Rendezvous1, Rendezvous2, RendezvousEstablished
from onionmesh.wire.relay_msg import RelayCommand, RelayMessage

COOKIE_LIFETIME = 120.0  # a client that has not been met by then builds a new rendezvous circuit
MAX_WAITING = 8192


class RendezvousPoint:
    """The handlers for ESTABLISH_RENDEZVOUS and RENDEZVOUS1 on one relay's switch."""

    def __init__(
        self,
        destroy: Callable[[RelayCircuitEntry, DestroyReason], None],
        count: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._destroy, self._count, self._clock = destroy, count, clock
        self.waiting: dict[bytes, tuple[RelayCircuitEntry, float]] = {}  # cookie -> (circuit, since)
        self._used: weakref.WeakSet[RelayCircuitEntry] = weakref.WeakSet()

    def register(self, handlers: dict[RelayCommand, Handler]) -> None:
        handlers[RelayCommand.ESTABLISH_RENDEZVOUS] = self.establish_rendezvous
        handlers[RelayCommand.RENDEZVOUS1] = self.rendezvous1

    def expire(self) -> None:
        """Forget cookies past their lifetime (their circuits are destroyed) and dead circuits."""
        now = self._clock()
        for cookie, (entry, since) in list(self.waiting.items()):
            if entry.dead or now - since >= COOKIE_LIFETIME:
                del self.waiting[cookie]
                if not entry.dead:
                    self._count("hs_rend_expired")
                    self._destroy(entry, DestroyReason.FINISHED)

    def establish_rendezvous(self, entry: RelayCircuitEntry, msg: RelayMessage) -> None:
        if entry in self._used:
            self._count("hs_rend_refused")
            raise RemoteProtocolError("ESTABLISH_RENDEZVOUS twice on one circuit")
        self._used.add(entry)
        try:
            cookie = EstablishRendezvous.decode(msg.body).cookie
        except RemoteProtocolError:
            self._count("hs_rend_refused")
            raise
        self.expire()
        if cookie in self.waiting:
            self._count("hs_rend_refused")
            raise RemoteProtocolError("rendezvous cookie already in use")
        if len(self.waiting) >= MAX_WAITING:
            self._count("hs_rend_refused_full")
            self._destroy(entry, DestroyReason.RESOURCELIMIT)
            return
        self.waiting[cookie] = (entry, self._clock())
        self._count("hs_rend_established")
        entry.circ.send_message(RelayCommand.RENDEZVOUS_ESTABLISHED, RendezvousEstablished().encode())

    def rendezvous1(self, entry: RelayCircuitEntry, msg: RelayMessage) -> None:
        if entry in self._used:
            self._count("hs_rend_refused")
            raise RemoteProtocolError("RENDEZVOUS1 on a circuit that already has a role")
        self._used.add(entry)
        try:
            cell = Rendezvous1.decode(msg.body)
        except RemoteProtocolError:
            self._count("hs_rend_refused")
            raise
        waiting = self.waiting.pop(cell.cookie, None)
        if waiting is None or waiting[0].dead or self._clock() - waiting[1] >= COOKIE_LIFETIME:
            self._count("hs_rend_unknown_cookie")
            raise RemoteProtocolError("RENDEZVOUS1 for no waiting rendezvous circuit")
        client = waiting[0]
        client.circ.send_message(RelayCommand.RENDEZVOUS2, Rendezvous2(cell.handshake_info).encode())
        Join.splice(client, entry, self._destroy)
        self._count("hs_rend_joined")

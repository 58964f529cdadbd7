"""The introduction point: a relay where a service's intro circuit waits for clients' INTRODUCE1.

Registered at the switch's handler seam (`switch.handlers[command]`), never in the forwarding path:

* ESTABLISH_INTRO on a circuit that ends here: checked with `crypto.hs_intro.check_establish_intro`
  (signed by its auth key, bound to this very circuit by HANDSHAKE_AUTH); the circuit becomes the
  intro circuit for that auth key.  One circuit per auth key: a newer one (only the key's holder can
  sign it) replaces the older, which is destroyed.  Its DoS extension (rate, burst) sets a token
  bucket on the INTRODUCE2 this intro point forwards (Tor's ESTABLISH_INTRO DoS parameters).
* INTRODUCE1 on another circuit: forwarded unchanged as INTRODUCE2 on the intro circuit of its
  auth key; the client gets INTRODUCE_ACK (0 sent, 1 unknown service, 2 malformed, 3 rate-limited).
  A client circuit may introduce once (as Tor): a second INTRODUCE1 destroys it.
* State is bounded (MAX_INTRO_CIRCUITS auth keys; circuits are held weakly, dead ones dropped);
  every refusal is a clean DESTROY of that one circuit (the switch catches RemoteProtocolError)
  with a counter in the relay's stats.  The intro point learns only the auth key, never the service.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable

from onionmesh.crypto.hs_intro import check_establish_intro
from onionmesh.errors import RemoteProtocolError
from onionmesh.runtime.ratelimit import ByteBucket
from onionmesh.runtime.relay.circuit_entry import RelayCircuitEntry
from onionmesh.runtime.relay.switch import Handler
from onionmesh.wire.cell import DestroyReason
from onionmesh.wire.hs_cells import (
    EstablishIntro,
    Introduce1,
    IntroduceAck,
    IntroduceAckStatus,
    IntroEstablished,
)
from onionmesh.wire.relay_msg import RelayCommand, RelayMessage

MAX_INTRO_CIRCUITS = 4096  # service intro circuits one relay serves at once


class _Intro:
    __slots__ = ("bucket", "entry")

    def __init__(self, entry: RelayCircuitEntry, bucket: ByteBucket | None) -> None:
        self.entry, self.bucket = entry, bucket


class IntroPoint:
    """The handlers for ESTABLISH_INTRO and INTRODUCE1 on one relay's switch."""

    def __init__(
        self,
        destroy: Callable[[RelayCircuitEntry, DestroyReason], None],
        count: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._destroy, self._count, self._clock = destroy, count, clock
        self.by_key: dict[bytes, _Intro] = {}
        self._role: weakref.WeakKeyDictionary[RelayCircuitEntry, str] = weakref.WeakKeyDictionary()

    def register(self, handlers: dict[RelayCommand, Handler]) -> None:
        handlers[RelayCommand.ESTABLISH_INTRO] = self.establish_intro
        handlers[RelayCommand.INTRODUCE1] = self.introduce1

    def _prune(self) -> None:
        for key in [k for k, v in self.by_key.items() if v.entry.dead]:
            del self.by_key[key]

    def establish_intro(self, entry: RelayCircuitEntry, msg: RelayMessage) -> None:
        if entry in self._role:
            self._count("hs_intro_refused")
            raise RemoteProtocolError("ESTABLISH_INTRO on a circuit that already has a role")
        try:
            cell = EstablishIntro.decode(msg.body)
            check_establish_intro(cell, entry.circ.binding_key)  # CryptoError is a RemoteProtocolError
            dos = cell.dos_params
        except RemoteProtocolError:
            self._count("hs_intro_refused")
            raise
        old = self.by_key.get(cell.auth_key)
        if old is None and len(self.by_key) >= MAX_INTRO_CIRCUITS:
            self._prune()
            if len(self.by_key) >= MAX_INTRO_CIRCUITS:
                self._count("hs_intro_refused_full")
                self._destroy(entry, DestroyReason.RESOURCELIMIT)
                return
        bucket = None
        if dos is not None and dos.enabled:
            bucket = ByteBucket(float(dos.rate), float(dos.burst), self._clock())
        self.by_key[cell.auth_key] = _Intro(entry, bucket)
        self._role[entry] = "intro"
        if old is not None and old.entry is not entry and not old.entry.dead:
            self._count("hs_intro_replaced")
            self._destroy(old.entry, DestroyReason.FINISHED)
        self._count("hs_intro_established")
        entry.circ.send_message(RelayCommand.INTRO_ESTABLISHED, IntroEstablished().encode())

    def introduce1(self, entry: RelayCircuitEntry, msg: RelayMessage) -> None:
        role = self._role.get(entry)
        if role is not None:  # an intro circuit, or a client circuit that already introduced
            self._count("hs_introduce_refused")
            raise RemoteProtocolError("INTRODUCE1 on a circuit that may not send one")
        self._role[entry] = "introduced"
        try:
            cell = Introduce1.decode(msg.body)
        except RemoteProtocolError:
            self._count("hs_introduce_malformed")
            self._ack(entry, IntroduceAckStatus.BAD_MESSAGE_FORMAT)
            return
        intro = self.by_key.get(cell.auth_key)
        if intro is None or intro.entry.dead:
            self._count("hs_introduce_unknown")
            self._ack(entry, IntroduceAckStatus.SERVICE_NOT_RECOGNIZED)
            return
        if intro.bucket is not None and intro.bucket.take(1, self._clock()) < 1:
            self._count("hs_introduce_rate_limited")
            self._ack(entry, IntroduceAckStatus.CANT_RELAY)
            return
        intro.entry.circ.send_message(RelayCommand.INTRODUCE2, msg.body)
        self._count("hs_introduce_forwarded")
        self._ack(entry, IntroduceAckStatus.SUCCESS)

    def _ack(self, entry: RelayCircuitEntry, status: IntroduceAckStatus) -> None:
        entry.circ.send_message(RelayCommand.INTRODUCE_ACK, IntroduceAck(status).encode())

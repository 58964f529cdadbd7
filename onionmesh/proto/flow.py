"""End-to-end flow control windows (Tor's SENDME scheme, with authenticated circuit SENDMEs).

A circuit may carry CIRC_WINDOW DATA cells before the far end acknowledges them; each SENDME
gives back CIRC_INCREMENT cells and carries the secret digest (layer T1) of the cell that
triggered it, so an endpoint cannot acknowledge data it never received (Tor proposal 289).
Streams have their own smaller windows so that one stream cannot fill the circuit.
Congestion control replaces the fixed circuit window later without changing these messages.

Not in this module: who sends what, cells, crypto.
"""

from __future__ import annotations

import hmac
from collections import deque

from onionmesh.errors import RemoteProtocolError

CIRC_WINDOW = 1000
CIRC_INCREMENT = 100
STREAM_WINDOW = 500
STREAM_INCREMENT = 50


class CircuitFlow:
    __slots__ = ("_expected", "_sent", "deliver", "package")

    def __init__(self) -> None:
        self.package = CIRC_WINDOW
        self.deliver = CIRC_WINDOW
        self._sent = 0
        self._expected: deque[bytes] = deque()

    def can_send(self) -> bool:
        return self.package > 0

    def next_is_tracked(self) -> bool:
        """Will the next DATA cell be one whose digest a SENDME must echo? (It then carries a nonce.)"""
        return (self._sent + 1) % CIRC_INCREMENT == 0

    def on_data_sent(self, digest: bytes) -> None:
        self.package -= 1
        self._sent += 1
        if self._sent % CIRC_INCREMENT == 0:
            self._expected.append(digest)

    def on_data_received(self, digest: bytes) -> bytes | None:
        """Count a DATA cell; returns the digest to put in a SENDME when one is due."""
        self.deliver -= 1
        if self.deliver < 0:
            raise RemoteProtocolError("peer exceeded the circuit window")
        if self.deliver <= CIRC_WINDOW - CIRC_INCREMENT:
            self.deliver += CIRC_INCREMENT
            return digest
        return None

    def on_sendme(self, digest: bytes) -> None:
        if not self._expected:
            raise RemoteProtocolError("unexpected circuit SENDME")
        if not hmac.compare_digest(self._expected.popleft(), digest):
            raise RemoteProtocolError("circuit SENDME does not authenticate")
        self.package += CIRC_INCREMENT


class StreamFlow:
    __slots__ = ("_unacked", "deliver", "package")

    def __init__(self) -> None:
        self.package = STREAM_WINDOW
        self.deliver = STREAM_WINDOW
        self._unacked = 0

    def can_send(self) -> bool:
        return self.package > 0

    def on_data_received(self) -> None:
        self.deliver -= 1
        self._unacked += 1
        if self.deliver < 0:
            raise RemoteProtocolError("peer exceeded the stream window")

    def on_data_consumed(self, cells: int = 1) -> bool:
        """The application took `cells` DATA cells; True when a stream SENDME is due."""
        self._unacked = max(0, self._unacked - cells)
        if self.deliver <= STREAM_WINDOW - STREAM_INCREMENT and self._unacked < 10:
            self.deliver += STREAM_INCREMENT
            return True
        return False

    def on_sendme(self) -> None:
        self.package += STREAM_INCREMENT
        if self.package > STREAM_WINDOW:
            raise RemoteProtocolError("stream SENDME beyond the window")

"""One hop's layer of relay-cell encryption: a two-pass keyed permutation that changes every cell.

Theory of operation (details, security argument and rationale: docs/protocol.md §6).  A relay
payload is split into a 16-byte tag T and a body C.  A relay *applies* its layer R to every
relay cell it handles, in both directions; the client builds outbound cells and peels inbound
ones with the inverse R⁻¹.  R is two rounds of an unbalanced Feistel network:

    T1 = T' ⊕ MAC(Kf, C')            C ‖ N = (C' ‖ 0⁸⁰) ⊕ XChaCha20(Ks, nonce = T1 ‖ 0⁸)

and outputs T1 ‖ C.  MAC is Poly1305 under a one-time key (ChaCha20-Poly1305's tag of an empty
message), which is safe because each key state serves exactly one cell: afterwards
Ks ‖ Kf ‖ M = N, i.e. the next keys are keystream bound to the old key and to T1.  Any change
to T' or C' changes the nonce T1 unpredictably or by a shift, and every byte of C becomes
noise at the honest hop; one fault puts the hop out of step for every later cell.  A cell is
meant for a hop when, after that hop's R (or the client's R⁻¹ for inbound cells), T is
sixteen zero bytes.  The cell's digest for SENDMEs is MAC(Kf, C') ⊕ M: only the two ends of
the layer can compute it, and only from the cell itself.

Not in this module: cell layouts, which hop a cell is for, flow control.
"""

from __future__ import annotations

from onionmesh.crypto.sodium import poly1305_mac, xchacha20_xor_tail

TAG_LEN = 16
ZERO_TAG = bytes(TAG_LEN)
_NONCE_PAD = bytes(8)
NEXT_LEN = 80  # keystream after the body: next Ks (32) ‖ next Kf (32) ‖ digest mask M (16)


def _xor(a: bytes, b: bytes) -> bytes:
    n = len(a)
    return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(n, "little")


class OnionLayer:
    """One direction of one hop: the keys evolve with every cell, so order matters."""

    __slots__ = ("_kf", "_ks", "_mac", "_mask", "cells")

    def __init__(self, stream_key: bytes, mac_key: bytes) -> None:
        if len(stream_key) != 32 or len(mac_key) != 32:
            raise ValueError("layer keys are 32 bytes")
        self._ks = stream_key
        self._kf = mac_key
        self._mac = self._mask = ZERO_TAG
        self.cells = 0

    def _advance(self, mac: bytes, tail: bytes) -> None:
        self._ks, self._kf, self._mask = tail[:32], tail[32:64], tail[64:]
        self._mac = mac
        self.cells += 1

    def apply(self, payload: bytes) -> bytes:
        """The relay's operation R."""
        c_in = payload[TAG_LEN:]
        mac = poly1305_mac(c_in, self._kf)
        t1 = _xor(payload[:TAG_LEN], mac)
        c_out, tail = xchacha20_xor_tail(c_in, NEXT_LEN, t1 + _NONCE_PAD, self._ks)
        self._advance(mac, tail)
        return t1 + c_out

    def unapply(self, payload: bytes) -> bytes:
        """The client's operation R⁻¹ (inverse of `apply` under the same key state)."""
        t1 = payload[:TAG_LEN]
        c_in, tail = xchacha20_xor_tail(payload[TAG_LEN:], NEXT_LEN, t1 + _NONCE_PAD, self._ks)
        mac = poly1305_mac(c_in, self._kf)
        self._advance(mac, tail)
        return _xor(t1, mac) + c_in

    def digest(self) -> bytes:
        """The last cell's secret digest (what a SENDME echoes): the same on both ends of the layer."""
        return _xor(self._mac, self._mask)


def is_recognized(payload: bytes) -> bool:
    """A payload whose tag is all zeros after a layer was meant for that layer's hop."""
    return payload[:TAG_LEN] == ZERO_TAG

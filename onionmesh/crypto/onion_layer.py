"""One hop's layer of relay-cell encryption: a two-pass keyed permutation that changes every cell.

Theory of operation (details, security argument and rationale: docs/protocol.md §6).  A relay
payload is split into a 12-byte tag T and a body C.  A relay *applies* its layer R to every
relay cell it handles, in both directions; the client builds outbound cells and peels inbound
ones with the inverse R⁻¹.  R is two rounds of an unbalanced Feistel network:

    T1 = T' ⊕ MAC(Kf, C')[0:12]       C ‖ N = (C' ‖ 0⁸⁰) ⊕ STREAM(Ks, nonce = T1)

and outputs T1 ‖ C.  Two suites fill in MAC and STREAM, chosen per hop by the circuit handshake:
XCHACHA (Poly1305 as ChaCha20-Poly1305's tag of an empty message; XChaCha20 with nonce
T1 ‖ 0¹²) and AES_GCM (GHASH as AES-256-GCM's tag of an empty message; AES-256-CTR as GCM's
keystream with nonce T1), the second for machines with AES instructions, where it costs less than
half.  Both MACs are Wegman-Carter MACs under one-time keys, which is safe because each key
state serves exactly one cell: afterwards Ks ‖ Kf ‖ M = N, i.e. the next keys are keystream
bound to the old key and to T1.  Any change
to T' or C' changes the nonce T1 unpredictably or by a shift, and every byte of C becomes
noise at the honest hop; one fault puts the hop out of step for every later cell.  A cell is
meant for a hop when, after that hop's R (or the client's R⁻¹ for inbound cells), T is
twelve zero bytes.  The cell's digest for SENDMEs is MAC(Kf, C') ⊕ M (all 16 bytes of the MAC):
only the two ends of the layer can compute it, and only from the cell itself.

Not in this module: cell layouts, which hop a cell is for, flow control.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import NamedTuple

from onionmesh.crypto.sodium import (
    HARDWARE_AES,
    aes256gcm_xor_tail,
    ghash_mac,
    poly1305_mac,
    xchacha20_xor_tail,
)
from onionmesh.wire.relay_msg import TAG_LEN  # part of the cell layout, so wire owns it

ZERO_TAG = bytes(TAG_LEN)
MAC_LEN = 16
NEXT_LEN = 80  # keystream after the body: next Ks (32) ‖ next Kf (32) ‖ digest mask M (16)


class LayerSuite(enum.IntEnum):
    """The primitives behind MAC and STREAM (the circuit handshake type names the suite)."""

    XCHACHA = 1
    AES_GCM = 2


class _Primitives(NamedTuple):
    mac: Callable[[bytes, bytes], bytes]
    stream: Callable[[bytes, int, bytes, bytes], tuple[bytes, bytes]]
    nonce_pad: bytes  # T1 ‖ nonce_pad is the stream's nonce


_PRIMITIVES = {
    LayerSuite.XCHACHA: _Primitives(poly1305_mac, xchacha20_xor_tail, bytes(12)),
    LayerSuite.AES_GCM: _Primitives(ghash_mac, aes256gcm_xor_tail, b""),
}
# What this machine can run, best first (AES_GCM needs the CPU's AES instructions).
LOCAL_SUITES = (LayerSuite.AES_GCM, LayerSuite.XCHACHA) if HARDWARE_AES else (LayerSuite.XCHACHA,)


def _xor(a: bytes, b: bytes) -> bytes:
    n = len(a)
    return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(n, "little")


class OnionLayer:
    """One direction of one hop: the keys evolve with every cell, so order matters."""

    __slots__ = ("_kf", "_ks", "_mac", "_mac_fn", "_mask", "_pad", "_stream", "cells", "suite")

    def __init__(self, stream_key: bytes, mac_key: bytes, suite: LayerSuite = LayerSuite.XCHACHA) -> None:
        if len(stream_key) != 32 or len(mac_key) != 32:
            raise ValueError("layer keys are 32 bytes")
        self.suite = suite
        self._mac_fn, self._stream, self._pad = _PRIMITIVES[suite]
        self._ks = stream_key
        self._kf = mac_key
        self._mac = self._mask = bytes(MAC_LEN)
        self.cells = 0

    def _advance(self, mac: bytes, tail: bytes) -> None:
        self._ks, self._kf, self._mask = tail[:32], tail[32:64], tail[64:]
        self._mac = mac
        self.cells += 1

    def apply(self, payload: bytes) -> bytes:
        """The relay's operation R."""
        c_in = payload[TAG_LEN:]
        mac = self._mac_fn(c_in, self._kf)
        t1 = _xor(payload[:TAG_LEN], mac[:TAG_LEN])
        c_out, tail = self._stream(c_in, NEXT_LEN, t1 + self._pad, self._ks)
        self._advance(mac, tail)
        return t1 + c_out

    def unapply(self, payload: bytes) -> bytes:
        """The client's operation R⁻¹ (inverse of `apply` under the same key state)."""
        t1 = payload[:TAG_LEN]
        c_in, tail = self._stream(payload[TAG_LEN:], NEXT_LEN, t1 + self._pad, self._ks)
        mac = self._mac_fn(c_in, self._kf)
        self._advance(mac, tail)
        return _xor(t1, mac[:TAG_LEN]) + c_in

    def digest(self) -> bytes:
        """The last cell's secret digest (what a SENDME echoes): the same on both ends of the layer."""
        return _xor(self._mac, self._mask)


def is_recognized(payload: bytes) -> bool:
    """A payload whose tag is all zeros after a layer was meant for that layer's hop."""
    return payload[:TAG_LEN] == ZERO_TAG

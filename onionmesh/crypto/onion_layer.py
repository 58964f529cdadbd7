"""One hop's layer of relay-cell encryption: a keyed wide-block permutation that changes every cell.

Theory of operation (details and rationale: docs/protocol.md, "Relay crypto").  A relay payload
is split into a 16-byte tag T and a body C.  A relay *applies* its layer R to every relay cell
it handles, in both directions; the client builds outbound cells and peels inbound ones with
the inverse R⁻¹.  R is a three-round unbalanced Feistel network:

    T1 = T' ⊕ F(Kf, "F1", C')        C = C' ⊕ XChaCha20(Ks, nonce = T1 ‖ 0⁸)        T = T1 ⊕ F(Kf, "F2", C)

with F = keyed BLAKE2b-128.  Any change to T' or C' turns all of T and C into noise at the
next honest hop (no controlled bit flip survives a layer: the tagging attack on Tor's tor1 is
gone).  After every cell both keys are replaced by BLAKE2b(Kf; T1), which chains each cell to
all earlier ones (a replayed, reordered, dropped or injected cell garbles every later one) and
erases the old keys (forward secrecy per cell).  A cell is meant for a hop when, after that
hop's R (or the client's R⁻¹ for inbound cells), T is sixteen zero bytes.

Not in this module: cell layouts, which hop a cell is for, flow control.
"""

from __future__ import annotations

import hashlib

from onionmesh.crypto.sodium import xchacha20_xor

TAG_LEN = 16
ZERO_TAG = bytes(TAG_LEN)
_NONCE_PAD = bytes(8)
_blake2b = hashlib.blake2b


def _xor(a: bytes, b: bytes) -> bytes:
    n = len(a)
    return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(n, "little")


class OnionLayer:
    """One direction of one hop: the keys evolve with every cell, so order matters."""

    __slots__ = ("_kf", "_ks", "cells")

    def __init__(self, stream_key: bytes, hash_key: bytes) -> None:
        if len(stream_key) != 32 or len(hash_key) != 32:
            raise ValueError("layer keys are 32 bytes")
        self._ks = stream_key
        self._kf = hash_key
        self.cells = 0

    def _ratchet(self, t1: bytes) -> None:
        new = _blake2b(t1, key=self._kf, digest_size=64, person=b"om-ratchet").digest()
        self._ks, self._kf = new[:32], new[32:]
        self.cells += 1

    def apply(self, payload: bytes) -> tuple[bytes, bytes]:
        """The relay's operation R. Returns (new payload, T1); T1 is the cell's secret digest."""
        t_in, c_in = payload[:TAG_LEN], payload[TAG_LEN:]
        kf = self._kf
        t1 = _xor(t_in, _blake2b(c_in, key=kf, digest_size=16, person=b"om-F1").digest())
        c_out = xchacha20_xor(c_in, t1 + _NONCE_PAD, self._ks)
        t_out = _xor(t1, _blake2b(c_out, key=kf, digest_size=16, person=b"om-F2").digest())
        self._ratchet(t1)
        return t_out + c_out, t1

    def unapply(self, payload: bytes) -> tuple[bytes, bytes]:
        """The client's operation R⁻¹ (inverse of `apply` under the same key state)."""
        t_out, c_out = payload[:TAG_LEN], payload[TAG_LEN:]
        kf = self._kf
        t1 = _xor(t_out, _blake2b(c_out, key=kf, digest_size=16, person=b"om-F2").digest())
        c_in = xchacha20_xor(c_out, t1 + _NONCE_PAD, self._ks)
        t_in = _xor(t1, _blake2b(c_in, key=kf, digest_size=16, person=b"om-F1").digest())
        self._ratchet(t1)
        return t_in + c_in, t1


def is_recognized(payload: bytes) -> bool:
    """A payload whose tag is all zeros after a layer was meant for that layer's hop."""
    return payload[:TAG_LEN] == ZERO_TAG

"""Proof of work on introductions (onionmesh-blake2b-1): Tor's prop 327 shape without Equi-X.

    h = BLAKE2b(size = 32, person = "om-hs-pow-v1")(seed | nonce | u32 effort | blinded_pk | client_pk)
    valid  iff  effort >= 1  and  u64(h[0:8]) * effort < 2^64          (expected trials: effort)

The service publishes (seed, suggested effort) in its descriptor and rotates the seed; a client
under load solves for an effort and sends nonce, effort and the seed's first 4 bytes in
INTRODUCE1's cleartext PoW extension, so the service ranks and drops introductions before it
spends an X25519 on them.  The hash covers the client's ephemeral key X, so one solution buys one
introduction (the service's replay cache on X ends reuse).  Why not Equi-X: no Python
implementation; a plain hash puzzle is GPU-friendlier (Equi-X is memory-hard-ish), which
docs/protocol.md §16.8 states as the cost.

`IntroQueue` is the service's priority queue: highest effort first, FIFO within an effort,
bounded (the lowest-effort entry is dropped when full).
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

VERSION = 1
PERSON = b"om-hs-pow-v1"
NONCE_LEN = 16
SEED_LEN = 32
_LIMIT = 2**64
T = TypeVar("T")


def pow_hash(seed: bytes, nonce: bytes, effort: int, blinded_pk: bytes, client_pk: bytes) -> bytes:
    return hashlib.blake2b(
        seed + nonce + effort.to_bytes(4, "big") + blinded_pk + client_pk, digest_size=32, person=PERSON
    ).digest()


def is_valid(seed: bytes, nonce: bytes, effort: int, blinded_pk: bytes, client_pk: bytes) -> bool:
    if not 1 <= effort < 2**32 or len(nonce) != NONCE_LEN:
        return False
    value = int.from_bytes(pow_hash(seed, nonce, effort, blinded_pk, client_pk)[:8], "big")
    return value * effort < _LIMIT


def solve(
    seed: bytes, effort: int, blinded_pk: bytes, client_pk: bytes, start: bytes, max_trials: int
) -> bytes | None:
    """Try nonces start, start+1, ... (as 128-bit big-endian counters) at most `max_trials`
    times; the nonce found or None.  Bounded so the caller can run it in slices off its loop."""
    counter = int.from_bytes(start, "big")
    for i in range(max_trials):
        nonce = ((counter + i) % 2**128).to_bytes(NONCE_LEN, "big")
        if is_valid(seed, nonce, effort, blinded_pk, client_pk):
            return nonce
    return None


@dataclass(order=True)
class _Entry(Generic[T]):
    neg_effort: int
    seq: int
    item: T = field(compare=False)


class IntroQueue(Generic[T]):
    """Pending introductions, served highest effort first."""

    def __init__(self, capacity: int, on_drop: Callable[[int], None] | None = None) -> None:
        self.capacity = capacity
        self._heap: list[_Entry[T]] = []
        self._seq = itertools.count()
        self.dropped = 0
        self.on_drop = on_drop  # told the effort of each request dropped (the service's effort controller)

    def push(self, item: T, effort: int) -> bool:
        """Queue `item`; False if it was dropped (queue full of higher efforts)."""
        entry = _Entry(-effort, next(self._seq), item)
        if len(self._heap) < self.capacity:
            heapq.heappush(self._heap, entry)
            return True
        worst = max(self._heap)  # lowest effort, newest among equals
        self.dropped += 1
        if entry >= worst:
            if self.on_drop is not None:
                self.on_drop(effort)
            return False
        if self.on_drop is not None:
            self.on_drop(-worst.neg_effort)
        self._heap.remove(worst)
        heapq.heapify(self._heap)
        heapq.heappush(self._heap, entry)
        return True

    def pop(self) -> tuple[T, int]:
        entry = heapq.heappop(self._heap)
        return entry.item, -entry.neg_effort

    def head_effort(self) -> int | None:
        """The effort of the request served next (None when empty)."""
        return -self._heap[0].neg_effort if self._heap else None

    def __len__(self) -> int:
        return len(self._heap)

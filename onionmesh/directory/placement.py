"""Where a DHT value lives, computed from the view: replica positions and the aged relays nearest them.

Why (docs/directory-design.md §5): an iterative lookup walks routing tables and candidate heaps
that colluding Sybils crowd; a client that knows every running relay's node ID can compute the
replica set itself and ask the replicas directly.  It then fails only if every replica it
computed withholds or is down.

    P_i = H160("om-replica", K ‖ u32 day ‖ u8 i)          i = 0 .. POSITIONS-1
    replicas(K, day) = for each P_i, the PER_POSITION running relays of the view nearest (XOR over
                       node IDs) to P_i, counted only if in the view for ≥ MIN_AGE ("aged"),
                       distinct over all positions (a relay near two positions counts once: the
                       next nearest takes its place at the later position)

Aged relays only, so that fresh node IDs (ground for a day's predictable positions, or simply
many new Sybils) cannot crowd the replica set: an adversary must run its relays for MIN_AGE
before they count.  `ReplicaIndex` is built once per view (sorted IDs) and answers in
O(POSITIONS · log N).  Sans-I/O: the caller passes `now` and when each relay entered its view.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

POSITIONS = 4
PER_POSITION = 4
REPLICAS = POSITIONS * PER_POSITION  # 16
MIN_AGE = 72 * 3600.0
DAY = 86_400
ID_LEN = 20
ID_BITS = 8 * ID_LEN

T = TypeVar("T")


def replica_position(key: bytes, day: int, i: int) -> bytes:
    """P_i for `key` on UTC `day` (BLAKE2b-160, personalised "om-replica")."""
    if not 0 <= day < 2**32 or not 0 <= i < 256:
        raise ValueError("day or position index out of range")
    data = key + day.to_bytes(4, "big") + bytes([i])
    return hashlib.blake2b(data, digest_size=ID_LEN, person=b"om-replica").digest()


def replica_positions(key: bytes, day: int, positions: int = POSITIONS) -> list[bytes]:
    return [replica_position(key, day, i) for i in range(positions)]


def day_of(now: float) -> int:
    return int(now // DAY)


@dataclass(frozen=True)
class Candidate(Generic[T]):
    """A running relay of the view: its DHT node ID, when it entered the view, and what the
    caller wants back (a descriptor, a contact)."""

    node_id: bytes
    first_seen: float
    item: T


class ReplicaIndex(Generic[T]):
    """The aged candidates of one view, sorted by node ID, for nearest-to-position queries."""

    def __init__(self, candidates: Iterable[Candidate[T]], now: float, min_age: float = MIN_AGE) -> None:
        by_id: dict[bytes, Candidate[T]] = {}
        for c in candidates:
            if len(c.node_id) != ID_LEN:
                raise ValueError("node IDs are 20 bytes")
            if now - c.first_seen >= min_age:
                by_id[c.node_id] = c
        self._sorted: list[Candidate[T]] = [by_id[k] for k in sorted(by_id)]
        self._ids: list[int] = [int.from_bytes(c.node_id, "big") for c in self._sorted]

    def __len__(self) -> int:
        return len(self._sorted)

    def nearest(
        self, position: bytes, count: int, exclude: frozenset[bytes] = frozenset()
    ) -> list[Candidate[T]]:
        """The `count` candidates nearest (XOR) to `position`, skipping `exclude` node IDs."""
        want = count + len(exclude)
        target = int.from_bytes(position, "big")
        ids = self._ids
        if len(ids) <= want:
            lo, hi = 0, len(ids)
        else:
            # The longest prefix of `target` shared by ≥ want IDs: the XOR-nearest `want` all lie in
            # that prefix's range (IDs outside it differ at a higher bit), a contiguous slice.
            lo, hi = 0, len(ids)
            bits_lo, bits_hi = 0, ID_BITS
            while bits_lo < bits_hi:
                mid = (bits_lo + bits_hi + 1) // 2
                shift = ID_BITS - mid
                base = (target >> shift) << shift
                a, b = bisect.bisect_left(ids, base), bisect.bisect_left(ids, base + (1 << shift))
                if b - a >= want:
                    bits_lo, lo, hi = mid, a, b
                else:
                    bits_hi = mid - 1
        window = sorted(range(lo, hi), key=lambda j: ids[j] ^ target)
        out = [self._sorted[j] for j in window if self._sorted[j].node_id not in exclude]
        return out[:count]

    def replicas(
        self, key: bytes, day: int, positions: int = POSITIONS, per_position: int = PER_POSITION
    ) -> list[Candidate[T]]:
        """The replica set of `key` on `day`, in asking order: the nearest of every position first,
        then the second nearest of each, ... (so any 4 consecutive asks cover all 4 positions)."""
        taken: set[bytes] = set()
        columns: list[list[Candidate[T]]] = []
        for pos in replica_positions(key, day, positions):
            near = self.nearest(pos, per_position, frozenset(taken))
            taken.update(c.node_id for c in near)
            columns.append(near)
        return [col[j] for j in range(per_position) for col in columns if j < len(col)]


def replica_set(
    candidates: Sequence[Candidate[T]], key: bytes, now: float, min_age: float = MIN_AGE
) -> list[Candidate[T]]:
    """One-shot form: the replicas of `key` for the day of `now`, from aged candidates."""
    return ReplicaIndex(candidates, now, min_age).replicas(key, day_of(now))

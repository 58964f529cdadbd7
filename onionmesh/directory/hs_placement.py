"""Where onion-service descriptors live in the DHT, and what a storing node checks.

    store_key(A', r, period) = SHA3-256("store-at-idx" | A' | INT_8(r) | INT_8(1440) | INT_8(period))[0:20]
                               with its top 2 bits replaced by r           (r = 0..3)

Tor's hs_service_index, cut to a 160-bit Kademlia key.  Forcing the top bits puts the four
replicas in four different quarters of the ID space, so the k nodes closest to one replica can
never be the nodes closest to another: a Sybil cluster near one key censors at most one replica.
The keys move every period with the blinded key.  Unlike Tor there is no shared random value, so
positions are predictable in advance (docs/protocol.md §16.5 says what that costs).

`HsDescriptorStore` is the bounded store a DHT node keeps for these records, beside its relay
descriptors: it never needs the address (`OuterRecord.check`).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable

from onionmesh.crypto.hs_blinding import PERIOD_LENGTH_MIN, period_start
from onionmesh.directory.hs_descriptor import MAX_RECORD_LEN, OuterRecord, parse_record
from onionmesh.errors import OnionmeshError

REPLICAS = 4
REPLICA_BITS = 2
KEY_LEN = 20
# A record is dropped at the end of its period plus this slack, even if its signed lifetime runs
# longer: clients whose clock is behind still find the old period's record for an hour after the
# boundary (the storing checks already accept 600 s of skew), and no record outlives its period
# by more, so a node holds at most two or three periods' records of one service.
PERIOD_SLACK = 3600


def record_expiry(record: OuterRecord) -> int:
    """When a storing node drops `record`: its signed expiry, or its period's end plus slack."""
    return min(record.expires, period_start(record.period + 1) + PERIOD_SLACK)


def store_key(blinded_pk: bytes, replica: int, period: int, length_min: int = PERIOD_LENGTH_MIN) -> bytes:
    if not 0 <= replica < REPLICAS:
        raise ValueError("replica out of range")
    digest = hashlib.sha3_256(
        b"store-at-idx"
        + blinded_pk
        + replica.to_bytes(8, "big")
        + length_min.to_bytes(8, "big")
        + period.to_bytes(8, "big")
    ).digest()
    top = (replica << (8 - REPLICA_BITS)) | (digest[0] & ((1 << (8 - REPLICA_BITS)) - 1))
    return bytes([top]) + digest[1:KEY_LEN]


def store_keys(blinded_pk: bytes, period: int) -> tuple[bytes, ...]:
    return tuple(store_key(blinded_pk, r, period) for r in range(REPLICAS))


class HsStoreResult(enum.Enum):
    STORED = "stored"
    ALREADY_HELD = "already-held"
    BAD_KEY = "bad-key"
    OVERSIZED = "oversized"
    INVALID = "invalid"  # malformed, bad signature, expired, from the future, wrong period
    WRONG_KEY = "wrong-key"
    OLDER = "older"  # revision not above the one held
    FULL = "full"


def check_for_storage(key: object, value: object, now: float) -> OuterRecord | HsStoreResult:
    """Every check a storing node makes before it stores or serves: the parsed record, or why not."""
    if not isinstance(key, bytes) or len(key) != KEY_LEN:
        return HsStoreResult.BAD_KEY
    if not isinstance(value, bytes) or len(value) > MAX_RECORD_LEN:
        return HsStoreResult.OVERSIZED
    try:
        record = parse_record(value)
        record.check(now)
    except OnionmeshError:
        return HsStoreResult.INVALID
    if now >= record_expiry(record):
        return HsStoreResult.INVALID
    if key not in store_keys(record.blinded_pk, record.period):
        return HsStoreResult.WRONG_KEY
    return record


class HsDescriptorStore:
    """One record per key, boundedly; a newer revision replaces an older one; expiry from the
    signed times and the period only (`record_expiry`), never from when a record arrived, so
    holders that keep re-replicating a record cannot keep it alive."""

    def __init__(self, clock: Callable[[], float], max_entries: int = 10_000) -> None:
        self.clock = clock
        self.max_entries = max_entries
        self._data: dict[bytes, OuterRecord] = {}
        self._received: dict[bytes, float] = {}
        self.refused: dict[HsStoreResult, int] = {}

    def offer(self, key: object, value: object) -> HsStoreResult:
        result = self._offer(key, value)
        if result not in (HsStoreResult.STORED, HsStoreResult.ALREADY_HELD):
            self.refused[result] = self.refused.get(result, 0) + 1
        return result

    def _offer(self, key: object, value: object) -> HsStoreResult:
        now = self.clock()
        checked = check_for_storage(key, value, now)
        if isinstance(checked, HsStoreResult):
            return checked
        assert isinstance(key, bytes)
        held = self._data.get(key)
        if held is not None and record_expiry(held) > now:
            if held.raw == checked.raw:
                return HsStoreResult.ALREADY_HELD
            if held.blinded_pk == checked.blinded_pk and checked.revision <= held.revision:
                return HsStoreResult.OLDER
        elif len(self._data) >= self.max_entries:
            self._expire(now)  # the expired go first
            if len(self._data) >= self.max_entries:
                victim = min(self._data, key=lambda k: record_expiry(self._data[k]))
                if record_expiry(self._data[victim]) >= record_expiry(checked):
                    return HsStoreResult.FULL
                self._drop(victim)
        self._data[key] = checked
        self._received[key] = now
        return HsStoreResult.STORED

    def _drop(self, key: bytes) -> None:
        self._data.pop(key, None)
        self._received.pop(key, None)

    def _expire(self, now: float) -> None:
        for key in [k for k, r in self._data.items() if record_expiry(r) <= now]:
            self._drop(key)

    def get(self, key: bytes) -> bytes | None:
        """The raw record to serve, if held and still valid now (re-checked: the period may have moved)."""
        record = self._data.get(key)
        if record is None:
            return None
        checked = check_for_storage(key, record.raw, self.clock())
        if isinstance(checked, HsStoreResult):
            self._drop(key)
            return None
        return record.raw

    def items(self, older_than: float = 0.0) -> list[tuple[bytes, bytes]]:
        """(key, raw) of every record still held, received at least `older_than` seconds ago."""
        now = self.clock()
        self._expire(now)
        return [(k, r.raw) for k, r in self._data.items() if now - self._received[k] >= older_than]

    def __len__(self) -> int:
        return len(self._data)

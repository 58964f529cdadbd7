"""What DHT nodes agree on, sans-I/O: node IDs bound to identity keys, the hello proof, and the
validated store of descriptors that every honest node keeps.

* A node's ID is BLAKE2b-160 of its Ed25519 identity key: a node cannot choose where it sits in
  the ID space (short of grinding keys, which the disjoint lookups and subnet limits answer).
* A node proves its ID by signing a fresh nonce from the asker together with its ID
  (`sign_hello` / `verify_hello`); only then does it enter a routing table.
* `DescriptorStore` accepts a value only if it is a valid signed descriptor, stored under its
  own key, unexpired, not from the future, not oversized, and not older than the one held;
  expiry comes from the signed `expires`, so holders cannot keep stale values alive. The store
  is bounded; when full it drops the value that expires first.

Not in this module: UDP, the kademlia package, crawling (runtime.dht.node).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from onionmesh.crypto.keys import IdentityKey, verify_signature
from onionmesh.directory.descriptor import MAX_DESCRIPTOR_LEN, RelayDescriptor, decode_and_verify
from onionmesh.directory.subnets import subnet
from onionmesh.errors import CryptoError, OnionmeshError

NODE_ID_LEN = 20
HELLO_CONTEXT = b"onionmesh dht hello v1\x00"
NONCE_LEN = 16


def node_id_for(identity_pk: bytes) -> bytes:
    """The DHT node ID of the relay with this identity key."""
    return hashlib.blake2b(identity_pk, digest_size=NODE_ID_LEN, person=b"om-dht-node-id").digest()


def sign_hello(identity: IdentityKey, nonce: bytes) -> bytes:
    return identity.sign(HELLO_CONTEXT, nonce + node_id_for(identity.public))


def verify_hello(descriptor: RelayDescriptor, node_id: bytes, nonce: bytes, signature: bytes) -> None:
    """Raise CryptoError unless `node_id` belongs to the descriptor's identity and it signed `nonce`."""
    if node_id != node_id_for(descriptor.identity_pk):
        raise CryptoError("node ID is not bound to the identity key")
    verify_signature(descriptor.identity_pk, HELLO_CONTEXT, nonce + node_id, signature)


def subnet_of(ip: str) -> str:
    """The network a Sybil most cheaply fills: the /24 of an IPv4 address, the /48 of an IPv6 one."""
    return subnet(ip, 24, 48)


class StoreResult(enum.Enum):
    STORED = "stored"
    ALREADY_HELD = "already-held"
    NOT_BYTES = "not-bytes"
    BAD_KEY = "bad-key"
    OVERSIZED = "oversized"
    INVALID = "invalid"  # does not parse, bad signature, expired, from the future
    WRONG_KEY = "wrong-key"
    OLDER = "older"
    FULL = "full"


@dataclass
class _Entry:
    descriptor: RelayDescriptor
    raw: bytes
    received: float


class DescriptorStore:
    """A kademlia `IStorage` that holds only valid, current descriptors (one per key), boundedly."""

    def __init__(self, clock: Callable[[], float], max_entries: int = 10_000) -> None:
        self.clock = clock
        self.max_entries = max_entries
        self._data: dict[bytes, _Entry] = {}
        self.refused: dict[StoreResult, int] = {}

    def offer(self, key: object, value: object) -> StoreResult:
        """Validate and store; the reason when refused. Never raises on peer input."""
        result = self._offer(key, value)
        if result not in (StoreResult.STORED, StoreResult.ALREADY_HELD):
            self.refused[result] = self.refused.get(result, 0) + 1
        return result

    def _offer(self, key: object, value: object) -> StoreResult:
        if not isinstance(key, bytes) or len(key) != NODE_ID_LEN:
            return StoreResult.BAD_KEY
        if not isinstance(value, bytes):
            return StoreResult.NOT_BYTES
        if len(value) > MAX_DESCRIPTOR_LEN:
            return StoreResult.OVERSIZED
        now = self.clock()
        try:
            desc = decode_and_verify(value, now)
        except OnionmeshError:
            return StoreResult.INVALID
        if desc.dht_key != key:
            return StoreResult.WRONG_KEY
        held = self._data.get(key)
        if held is not None and held.descriptor.usable_until > now:
            if held.raw == value:
                held.received = now
                return StoreResult.ALREADY_HELD
            if desc.published <= held.descriptor.published:
                return StoreResult.OLDER
        elif len(self._data) >= self.max_entries and not self._make_room(desc, now):
            return StoreResult.FULL
        self._data[key] = _Entry(desc, value, now)
        return StoreResult.STORED

    def _make_room(self, incoming: RelayDescriptor, now: float) -> bool:
        self._expire(now)
        if len(self._data) < self.max_entries:
            return True
        victim = min(self._data, key=lambda k: self._data[k].descriptor.usable_until)
        if self._data[victim].descriptor.usable_until >= incoming.usable_until:
            return False
        del self._data[victim]
        return True

    def _expire(self, now: float) -> None:
        for key in [k for k, e in self._data.items() if e.descriptor.usable_until <= now]:
            del self._data[key]

    def descriptor(self, key: bytes) -> RelayDescriptor | None:
        entry = self._data.get(key)
        if entry is None or entry.descriptor.usable_until <= self.clock():
            return None
        return entry.descriptor

    # --- kademlia's IStorage interface -----------------------------------------------------
    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.offer(key, value)

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:
        entry = self._data.get(key)
        if entry is None or entry.descriptor.usable_until <= self.clock():
            return default
        return entry.raw

    def __getitem__(self, key: bytes) -> bytes:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def iter_older_than(self, seconds_old: float) -> list[tuple[bytes, bytes]]:
        now = self.clock()
        self._expire(now)
        return [(k, e.raw) for k, e in self._data.items() if now - e.received >= seconds_old]

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        self._expire(self.clock())
        return iter([(k, e.raw) for k, e in self._data.items()])

    def __len__(self) -> int:
        return len(self._data)

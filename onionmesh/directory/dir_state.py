"""A relay list's state, sans-I/O: entries by relay, bucket hashes and the state digest.

Why apart from dir_list (the signed documents): two sources with the same verified inputs must
reach the same 32-byte digest, and a client must be able to compare one bucket without the rest;
that is a property of the state alone (docs/directory-design.md §3.1-3.2).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from onionmesh.directory.descriptor import MAX_DESCRIPTOR_LEN, RelayDescriptor, decode_and_verify
from onionmesh.errors import RemoteProtocolError
from onionmesh.wire.buffer import Buffer

FP_LEN = 20
DIGEST_LEN = 32
MAX_ENTRIES = 65_536
BUCKETS = 256
RUNNING = 0x01
KNOWN_FLAGS = RUNNING
U32_MAX = 2**32 - 1


def dir_hash(person: bytes, data: bytes) -> bytes:
    """BLAKE2b-256, personalised per use (leaf, bucket, state, ...)."""
    return hashlib.blake2b(data, digest_size=DIGEST_LEN, person=person).digest()


def fp_bytes(desc: RelayDescriptor) -> bytes:
    return bytes.fromhex(desc.fingerprint)


@dataclass(frozen=True)
class DirEntry:
    """One relay in a state: its verified descriptor (and exact bytes), flags and weight (kB/s)."""

    descriptor: RelayDescriptor
    raw: bytes
    flags: int = RUNNING
    weight: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.flags <= 0xFF or self.flags & ~KNOWN_FLAGS:
            raise ValueError("unknown entry flags")
        if not 0 <= self.weight <= U32_MAX:
            raise ValueError("weight out of range")

    @classmethod
    def of(cls, desc: RelayDescriptor, flags: int = RUNNING, weight: int = 0) -> DirEntry:
        return cls(desc, desc.encode(), flags, weight)

    @functools.cached_property
    def fp(self) -> bytes:
        return fp_bytes(self.descriptor)  # a hash of the key: computed once per entry

    @property
    def running(self) -> bool:
        return bool(self.flags & RUNNING)

    def encode(self) -> bytes:
        return Buffer().push_u8(self.flags).push_u32(self.weight).push_vec16(self.raw).getvalue()

    def leaf(self) -> bytes:
        return dir_hash(b"om-dir-leaf", self.encode())


def pull_entry(buf: Buffer, now: float) -> DirEntry:
    flags = buf.pull_u8()
    weight = buf.pull_u32()
    raw = buf.pull_vec16()
    if flags & ~KNOWN_FLAGS:
        raise RemoteProtocolError("unknown entry flags")
    if len(raw) > MAX_DESCRIPTOR_LEN:
        raise RemoteProtocolError("descriptor too long")
    return DirEntry(decode_and_verify(raw, now), raw, flags, weight)


class DirState:
    """A source's (or a client's) list at an epoch: at most one entry per relay identity."""

    def __init__(self, epoch: int, entries: Iterable[DirEntry] = ()) -> None:
        if not 0 <= epoch <= U32_MAX:
            raise ValueError("epoch out of range")
        self.epoch = epoch
        self.entries: dict[bytes, DirEntry] = {}
        for entry in entries:
            if entry.fp in self.entries:
                raise ValueError("two entries for one relay")
            self.entries[entry.fp] = entry
        if len(self.entries) > MAX_ENTRIES:
            raise ValueError("too many entries")
        self._by_bucket: list[list[DirEntry]] | None = None
        self._hashes: list[bytes] | None = None

    # A state is never changed once built (every change makes a new one: dir_list.apply_diff), so
    # its buckets and hashes are computed once: a client's union of three 10,000-relay states asks
    # for them per bucket and per source.
    def sorted_entries(self) -> list[DirEntry]:
        return [e for b in self._buckets() for e in b]

    def _buckets(self) -> list[list[DirEntry]]:
        if self._by_bucket is None:
            self._by_bucket = [[] for _ in range(BUCKETS)]
            for fp in sorted(self.entries):
                self._by_bucket[fp[0]].append(self.entries[fp])
        return self._by_bucket

    def bucket(self, b: int) -> list[DirEntry]:
        return list(self._buckets()[b])

    def bucket_hashes(self) -> list[bytes]:
        if self._hashes is None:
            self._hashes = [_bucket_hash(b, [e.leaf() for e in es]) for b, es in enumerate(self._buckets())]
        return list(self._hashes)

    def digest(self) -> bytes:
        return state_digest(self.epoch, self.bucket_hashes())

    def __len__(self) -> int:
        return len(self.entries)


def _bucket_hash(b: int, leaves: list[bytes]) -> bytes:
    return dir_hash(b"om-dir-bucket", bytes([b]) + b"".join(leaves))


def bucket_hash_of(b: int, entries: Iterable[DirEntry]) -> bytes:
    return _bucket_hash(b, [e.leaf() for e in sorted(entries, key=lambda e: e.fp)])


def state_digest(epoch: int, bucket_hashes: list[bytes]) -> bytes:
    if len(bucket_hashes) != BUCKETS:
        raise ValueError("need 256 bucket hashes")
    return dir_hash(b"om-dir-state", epoch.to_bytes(4, "big") + b"".join(bucket_hashes))

"""What a DHT node stores: relay descriptors and onion-service descriptor records, side by side.

The two kinds share the DHT's key space and RPCs (`store`, `find_value`), so a node tells them
apart by the value itself, never by a guess from the key: an onion-service record starts with
the magic "OMHS", a relay descriptor with its version byte 1 (docs/protocol.md §16.4).  Each kind
goes to its own validating, bounded store (`DescriptorStore`, `HsDescriptorStore`), which check
everything before they store or serve; this class is only the dispatch and the `kademlia`
package's `IStorage` interface over both.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator

from onionmesh.directory.dht_records import DescriptorStore, StoreResult
from onionmesh.directory.hs_descriptor import MAGIC
from onionmesh.directory.hs_placement import HsDescriptorStore, HsStoreResult

ACCEPTED = frozenset({"stored", "already-held"})


def is_hs_record(value: object) -> bool:
    """Is this value (as sent in a `store`) an onion-service record rather than a relay descriptor?"""
    return isinstance(value, bytes) and value[: len(MAGIC)] == MAGIC


class DhtStorage:
    """The kademlia `IStorage` of a DHT node: both stores, each with its own cap."""

    def __init__(
        self, clock: Callable[[], float], max_entries: int = 10_000, max_hs_entries: int = 10_000
    ) -> None:
        self.clock = clock
        self.relays = DescriptorStore(clock, max_entries)
        self.onion = HsDescriptorStore(clock, max_hs_entries)

    def offer(self, key: object, value: object) -> StoreResult | HsStoreResult:
        """Validate and store in the store of the value's kind; the outcome. Never raises on peer input."""
        if is_hs_record(value):
            return self.onion.offer(key, value)
        return self.relays.offer(key, value)

    @staticmethod
    def accepted(result: enum.Enum) -> bool:
        return result.value in ACCEPTED

    @property
    def refused(self) -> dict[str, int]:
        """Refusals of both kinds, by reason (the metrics read this)."""
        out: dict[str, int] = {}
        for table in (self.relays.refused, self.onion.refused):
            for reason, count in table.items():
                out[reason.value] = out.get(reason.value, 0) + count
        return out

    # --- kademlia's IStorage interface -----------------------------------------------------
    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.offer(key, value)

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:
        value = self.relays.get(key)
        if value is None:
            value = self.onion.get(key)
        return default if value is None else value

    def __getitem__(self, key: bytes) -> bytes:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def iter_older_than(self, seconds_old: float) -> list[tuple[bytes, bytes]]:
        return self.relays.iter_older_than(seconds_old) + self.onion.items(seconds_old)

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        return iter(list(self.relays) + self.onion.items())

    def __len__(self) -> int:
        return len(self.relays) + len(self.onion)

"""The client's verified view of the network: every relay it found, bounded, per-subnet capped.

Fed by the DHT crawl (runtime.client.directory) with descriptors that already passed verification.
A relay leaves the view when its descriptor (or onion key) expires, or when it was missing
from `MISSED_CRAWLS_TO_DROP` consecutive crawls (it left the network).  At most
`max_per_subnet` relays of one /24 (IPv4) or /48 (IPv6) are kept, those seen first, so a Sybil
that buys one subnet cannot flood the view; the view holds at most `max_relays`.

Not in this module: how descriptors are fetched, path selection.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.directory.dht_records import subnet_of

MISSED_CRAWLS_TO_DROP = 2


@dataclass
class _Known:
    descriptor: RelayDescriptor
    first_seen: float
    last_crawl: int


class NetView:
    def __init__(self, max_relays: int = 20_000, max_per_subnet: int = 4) -> None:
        self.max_relays = max_relays
        self.max_per_subnet = max_per_subnet
        self._known: dict[str, _Known] = {}
        self.crawls = 0
        self.dropped_subnet = 0

    def merge(self, descriptors: Iterable[RelayDescriptor], now: float, *, crawl: bool = True) -> None:
        """Take in a crawl's verified descriptors (newest wins), then forget the absent and the expired."""
        if crawl:
            self.crawls += 1
        for desc in descriptors:
            known = self._known.get(desc.fingerprint)
            if known is None:
                self._known[desc.fingerprint] = _Known(desc, now, self.crawls)
            else:
                if desc.published >= known.descriptor.published:
                    known.descriptor = desc
                known.last_crawl = self.crawls
        self._prune(now)

    def _prune(self, now: float) -> None:
        for fp in list(self._known):
            known = self._known[fp]
            if (
                known.descriptor.usable_until <= now
                or self.crawls - known.last_crawl >= MISSED_CRAWLS_TO_DROP
            ):
                del self._known[fp]
        by_subnet: dict[str, list[_Known]] = {}
        for known in sorted(self._known.values(), key=lambda k: (k.first_seen, k.descriptor.fingerprint)):
            by_subnet.setdefault(subnet_of(known.descriptor.link_addresses[0][0]), []).append(known)
        keep: list[_Known] = []
        for members in by_subnet.values():
            keep += members[: self.max_per_subnet]
            self.dropped_subnet += max(0, len(members) - self.max_per_subnet)
        keep.sort(key=lambda k: (k.first_seen, k.descriptor.fingerprint))
        self._known = {k.descriptor.fingerprint: k for k in keep[: self.max_relays]}

    def relays(self, now: float) -> list[RelayDescriptor]:
        return [k.descriptor for k in self._known.values() if k.descriptor.usable_until > now]

    def __len__(self) -> int:
        return len(self._known)

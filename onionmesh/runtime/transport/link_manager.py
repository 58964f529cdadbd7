"""A node's links, for the client and the relay alike: open or reuse one per peer under a lock,
look circuits up by link, close them all.

Both roles reach peers by identity: the client its first hops (and bridges), a relay the next
hop of an EXTEND.  Two circuits that need the same peer at once must share one link, so the
lookup and the open run under a per-identity lock; a closed link is replaced on the next use.

Not in this module: how a link is opened (TCP, WebSocket: the caller's `opener`), what its
cells mean (the owner).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic

from onionmesh.runtime.transport.link import C, Link, LinkLimits


class LinkManager(Generic[C]):
    def __init__(self, limits: LinkLimits) -> None:
        self.limits = limits  # shared by every link: the node's queue budget and bandwidth buckets
        self.links: set[Link[C]] = set()
        self._by_identity: dict[bytes, Link[C]] = {}
        self._locks: dict[bytes, asyncio.Lock] = {}

    def get(self, identity_pk: bytes) -> Link[C] | None:
        """The open link to this peer, if any."""
        link = self._by_identity.get(identity_pk)
        return link if link is not None and not link.closed else None

    async def get_or_open(self, identity_pk: bytes, opener: Callable[[], Awaitable[Link[C]]]) -> Link[C]:
        """The open link to this peer, or a new one from `opener` (which raises OSError when it
        cannot); concurrent callers for one peer wait for the same open."""
        link = self.get(identity_pk)
        if link is not None:
            return link
        async with self._locks.setdefault(identity_pk, asyncio.Lock()):
            link = self.get(identity_pk)
            if link is None:
                link = await opener()
                self._by_identity[identity_pk] = link
                self.links.add(link)
            return link

    def add(self, link: Link[C]) -> None:
        """An inbound link (known by its peer's identity only after its handshake)."""
        self.links.add(link)

    def closed(self, link: Link[C]) -> list[C]:
        """Forget a closed link; returns the circuits it carried, for the owner to tear down."""
        self.links.discard(link)
        if link.peer_identity is not None and self._by_identity.get(link.peer_identity) is link:
            del self._by_identity[link.peer_identity]
        circuits = []
        for slot in link.circuits.values():
            slot.attached = False
            circuits.append(slot.circuit)
        link.circuits.clear()
        return circuits

    def circuit_of(self, link: Link[C], circ_id: int) -> C | None:
        slot = link.circuits.get(circ_id)
        return None if slot is None else slot.circuit

    def close_all(self) -> None:
        for link in list(self.links):
            link.close()

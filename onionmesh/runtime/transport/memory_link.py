"""Links and sockets in memory: a connected pair of stream ends, and a link pair over it.

What a `Link` and a `StreamPump` use of asyncio's streams (read, write, drain, close, the
transport's buffer size) is all a pipe needs, so the client's circuit manager, the relay's
switch and the stream pump can be driven in one process without a socket: fast, deterministic
unit tests (tests/runtime/test_memory_links.py).  The real-socket tests stay.
"""

from __future__ import annotations

import asyncio
from typing import Any

from onionmesh.crypto.keys import IdentityKey
from onionmesh.rng import Rng
from onionmesh.runtime.transport.link import C, Link, LinkLimits, LinkOwner
from onionmesh.runtime.transport.link_setup import accept_link, initiate_link


class MemoryWriter:
    """One end's writing half: what it writes is fed to the other end's reader at once."""

    def __init__(self, own: asyncio.StreamReader, peer: asyncio.StreamReader) -> None:
        self._own, self._peer = own, peer
        self._closing = False
        self.written = 0

    @property
    def transport(self) -> MemoryWriter:
        return self

    def write(self, data: bytes) -> None:
        if self._closing:
            raise ConnectionResetError("memory pipe closed")
        self.written += len(data)
        self._peer.feed_data(data)

    async def drain(self) -> None:
        await asyncio.sleep(0)

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self._closing

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if not self._peer.at_eof():
            self._peer.feed_eof()

    def close(self) -> None:
        """Both directions end, as when a socket is closed."""
        if self._closing:
            return
        self._closing = True
        for reader in (self._peer, self._own):
            if not reader.at_eof():
                reader.feed_eof()

    async def wait_closed(self) -> None:
        return None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("memory", 0) if name == "peername" else default


Ends = tuple[asyncio.StreamReader, MemoryWriter]


def memory_pipe() -> tuple[Ends, Ends]:
    """Two connected (reader, writer) ends."""
    a, b = asyncio.StreamReader(), asyncio.StreamReader()
    wa, wb = MemoryWriter(a, b), MemoryWriter(b, a)
    wa.peer_writer, wb.peer_writer = wb, wa  # type: ignore[attr-defined]  # for tests that hang up
    return (a, wa), (b, wb)


async def memory_link_pair(
    initiator: LinkOwner[C],
    responder: LinkOwner[C],
    identity: IdentityKey,
    rng: Rng,
    initiator_limits: LinkLimits | None = None,
    responder_limits: LinkLimits | None = None,
) -> tuple[Link[C], Link[C]]:
    """An established link between two owners (the responder proves `identity`)."""
    (ra, wa), (rb, wb) = memory_pipe()
    inbound = accept_link(rb, wb, identity, responder, rng, responder_limits)  # type: ignore[arg-type]
    outbound = await initiate_link(ra, wa, identity.public, initiator, rng, limits=initiator_limits)  # type: ignore[arg-type]
    await inbound.established.wait()
    return outbound, inbound

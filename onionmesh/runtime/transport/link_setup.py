"""Opening a link: connect and run the initiator's handshake, or answer a peer's.

Apart from `link.py` (a running link) because making a link is where sockets, timeouts and the
identity pin meet, and the WebSocket transport and the in-memory pair reuse the handshake half.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable

from onionmesh.crypto.keys import IdentityKey
from onionmesh.proto.link import LinkProtocol, LinkRole
from onionmesh.proto.rtt import scaled_timeout
from onionmesh.rng import Rng
from onionmesh.runtime.transport.link import HANDSHAKE_TIMEOUT, C, Link, LinkLimits, LinkOwner

HANDSHAKE_ROUNDS = 10  # round trips (as the TCP connect measured one) a link handshake may take
HANDSHAKE_TIMEOUT_MAX = 60.0


async def open_link(
    host: str,
    port: int,
    identity_pk: bytes,
    owner: LinkOwner[C],
    rng: Rng,
    timeout: float = HANDSHAKE_TIMEOUT,
    local_host: str | None = None,
    limits: LinkLimits | None = None,
) -> Link[C]:
    """Connect to a relay and finish the handshake, pinning its identity; raises OSError on failure.

    A relay passes its own address as `local_host`, so its peers see the relay's address.
    """
    local = (local_host, 0) if local_host else None
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port, local_addr=local)
    with contextlib.suppress(OSError):
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # The TCP handshake took one round trip: the link handshake (two more, and records) gets
    # HANDSHAKE_ROUNDS of them, never less than `timeout` nor more than HANDSHAKE_TIMEOUT_MAX.
    handshake = scaled_timeout(
        loop.time() - started,
        rounds=HANDSHAKE_ROUNDS,
        floor=timeout,
        ceiling=max(timeout, HANDSHAKE_TIMEOUT_MAX),
    )
    return await initiate_link(reader, writer, identity_pk, owner, rng, handshake, limits)


async def initiate_link(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    identity_pk: bytes,
    owner: LinkOwner[C],
    rng: Rng,
    timeout: float = HANDSHAKE_TIMEOUT,
    limits: LinkLimits | None = None,
) -> Link[C]:
    """Run the initiator's handshake over any connected stream pair (TCP, or a WebSocket's)."""
    proto = LinkProtocol(LinkRole.INITIATOR, rng, expected_identity=identity_pk)
    link: Link[C] = Link(reader, writer, proto, owner, rng, limits)
    proto.initiate()
    writer.write(proto.data_to_send())
    link.start()
    try:
        async with asyncio.timeout(timeout):
            await link.established.wait()
    except TimeoutError:
        link.close()
        raise OSError("link handshake timed out") from None
    if link.closed:
        raise OSError("link handshake failed")
    return link


def accept_link(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    identity: IdentityKey,
    owner: LinkOwner[C],
    rng: Rng,
    limits: LinkLimits | None = None,
    on_established: Callable[[Link[C]], None] | None = None,
) -> Link[C]:
    """Answer a peer's handshake on a connected stream pair; the link closes if the peer has not
    finished it within HANDSHAKE_TIMEOUT.  `on_established` is called once when it is done."""
    proto = LinkProtocol(LinkRole.RESPONDER, rng, identity=identity)
    link: Link[C] = Link(reader, writer, proto, owner, rng, limits)
    link.on_established = on_established
    link.start(HANDSHAKE_TIMEOUT)
    return link

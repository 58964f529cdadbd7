"""The proxy's UDP association keeps what waits for circuits bounded over all its flows (1 MiB),
not per flow times flows: a client naming many destinations at once cannot grow the proxy."""

from __future__ import annotations

import asyncio

from onionmesh.proto.udp_flow import MAX_FLOWS, SHARED_QUEUE_BYTES
from onionmesh.runtime.client.socks_udp import UdpAssociation, UdpStats
from onionmesh.wire.udp_msg import SocksUdpHeader


class _NeverBuilt(UdpAssociation):
    """No circuit ever comes: every datagram waits in the association's queues."""

    async def _circuit_for(self, port: int):  # type: ignore[override]
        await asyncio.Event().wait()


async def test_many_destinations_share_one_bounded_budget() -> None:
    stats = UdpStats()
    assoc = _NeverBuilt(None, (None, None), "127.0.0.1", 0, stats)  # type: ignore[arg-type]
    sent = 0
    for i in range(2 * MAX_FLOWS):  # more destinations than flows are allowed
        packet = SocksUdpHeader(0, "127.0.0.1", 1000 + i, b"d" * 1200).encode()
        for _ in range(100):
            assoc.from_client(packet, ("127.0.0.1", 5555))
            sent += 1
    await asyncio.sleep(0)
    queued = sum(p.queue.bytes for p in assoc.opening.values())
    accepted = sum(len(p.queue) for p in assoc.opening.values())
    assert len(assoc.opening) == MAX_FLOWS
    assert queued <= SHARED_QUEUE_BYTES
    assert accepted + stats.dropped_full == sent  # every datagram carried, queued or counted
    assoc.close()
    assert not assoc.opening

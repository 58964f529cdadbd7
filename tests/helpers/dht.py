"""DHT peers for tests over real UDP on loopback: signed descriptors for a node to publish, raw
REQUEST/RESPONSE datagrams, a bare UDP socket that records what it receives (`RawPeer`), and `Net`,
the nodes and raw peers of one test, always stopped and closed."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

import umsgpack

from onionmesh.crypto.keys import IdentityKey, OnionKey, OnionKeyCert
from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.rng import SeededRng
from onionmesh.runtime.dht.node import DhtNode
from onionmesh.runtime.dht.protocol import OnionmeshDhtProtocol
from onionmesh.wire.dht_datagram import HEADER_LEN, NO_TOKEN
from tests.helpers import mesh

HOUR = 3600


def descriptor_raw(
    ident: IdentityKey,
    host: str,
    port: int,
    nick: str,
    *,
    published: int | None = None,
    lifetime: int = 18 * HOUR,
    contact: tuple[str, int] | None = None,
) -> bytes:
    now = int(time.time())
    published = now if published is None else published
    onion = OnionKey.generate(SeededRng(os.urandom(16)))
    cert = OnionKeyCert.issue(ident, onion.public, published - 60, published + 86400)
    return RelayDescriptor.create(
        identity=ident,
        onion_cert=cert,
        nickname=nick,
        link_addresses=((host, 9000),),
        dht_contact=contact or (host, port),
        exit_policy="",
        bandwidth=1000,
        published=published,
        lifetime=lifetime,
    ).encode()


def request(name: str, args: list[Any], token: bytes = NO_TOKEN) -> tuple[bytes, bytes]:
    """A raw REQUEST datagram (msg id, datagram), echoing `token` (none by default)."""
    msg_id = os.urandom(20)
    return msg_id, b"\x02" + msg_id + token + umsgpack.packb([name, args])


def response(msg_id: bytes, result: Any) -> bytes:
    return b"\x03" + msg_id + NO_TOKEN + umsgpack.packb(result)


class RawPeer(asyncio.DatagramProtocol):
    """A bare UDP socket on the loop that records every datagram it receives."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.received: list[tuple[bytes, tuple[str, int]]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append((data, addr))

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[:2]

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr)

    async def take(
        self, match: Callable[[bytes, tuple[str, int]], bool], timeout: float = 1.0
    ) -> tuple[bytes, tuple[str, int]] | None:
        """The first received datagram that matches (removed from `received`), or None."""
        deadline = time.monotonic() + timeout
        while True:
            for i, (data, addr) in enumerate(self.received):
                if match(data, addr):
                    del self.received[i]
                    return data, addr
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(0.005)

    async def reply_to(self, msg_id: bytes, timeout: float = 1.0) -> bytes | None:
        """The RESPONSE to `msg_id` (its body starts at HEADER_LEN), or None."""
        got = await self.take(lambda d, _a: d[:21] == b"\x03" + msg_id, timeout)
        return None if got is None else got[0]

    async def token(self, node: tuple[str, int]) -> bytes:
        """The address token `node` gives this socket (from the RETRY to a token-less ping)."""
        mid, ping = request("ping", [os.urandom(20)])
        self.send(ping, node)
        got = await self.take(lambda d, _a: d[:21] == b"\x04" + mid)
        assert got is not None and len(got[0]) == HEADER_LEN, "no RETRY came back"
        return got[0][21:HEADER_LEN]

    async def next_request(self, name: str, timeout: float = 2.0) -> tuple[bytes, list[Any], tuple[str, int]]:
        def is_it(data: bytes, _addr: tuple[str, int]) -> bool:
            if data[:1] != b"\x02":
                return False
            msg = umsgpack.unpackb(data[HEADER_LEN:])
            return isinstance(msg, list) and msg[0] == name

        got = await self.take(is_it, timeout)
        assert got is not None, f"no {name} request arrived"
        data, addr = got
        return data[1:21], umsgpack.unpackb(data[HEADER_LEN:])[1], addr


class Net:
    """Nodes and raw peers of one test; `async with` stops and closes all of them, always."""

    def __init__(self) -> None:
        self.nodes: list[DhtNode] = []
        self.raws: list[RawPeer] = []

    async def __aenter__(self) -> Net:
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            for node in self.nodes:
                node.stop()
        finally:
            for raw in self.raws:
                if raw.transport is not None:
                    raw.transport.close()
            await asyncio.sleep(0)

    @staticmethod
    def identity() -> IdentityKey:
        return IdentityKey.generate(SeededRng(os.urandom(16)))

    async def relay(self, host: str) -> DhtNode:
        ident = self.identity()
        node = DhtNode(ident)
        self.nodes.append(node)
        await node.listen(0, host)
        node.descriptor_raw = descriptor_raw(ident, host, node.address[1], f"n{len(self.nodes)}")
        return node

    async def client(self, host: str = "127.0.0.1") -> DhtNode:
        node = DhtNode(None)
        self.nodes.append(node)
        await node.listen(0, host)
        return node

    async def raw(self, host: str = "127.0.0.1") -> RawPeer:
        loop = asyncio.get_running_loop()
        _, peer = await loop.create_datagram_endpoint(RawPeer, local_addr=(host, 0))
        self.raws.append(peer)
        return peer

    async def network(self, n: int, *, first: int = 1) -> list[DhtNode]:
        """`n` relays on 127.0.{first}.1, 127.0.{first+1}.1, … bootstrapped from the first."""
        relays = [await self.relay(f"127.0.{first + i}.1") for i in range(n)]
        for node in relays[1:]:
            await node.bootstrap([relays[0].address])
        await settle(relays)
        return relays


def proto(node: DhtNode) -> OnionmeshDhtProtocol:
    assert node.protocol is not None
    return node.protocol


async def eventually(predicate: Callable[[], bool], timeout: float = 3.0) -> bool:
    """Poll every 10 ms until `predicate()` holds or `timeout` passes (UDP on loopback answers fast)."""
    return await mesh.eventually(predicate, timeout, interval=0.01)


async def settle(nodes: list[DhtNode], timeout: float = 3.0) -> None:
    """Wait until no node is still verifying a new contact."""
    await eventually(lambda: all(not proto(n)._verifying for n in nodes), timeout)
    await asyncio.sleep(0.02)

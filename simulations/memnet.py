"""An in-memory datagram network: `sendto` schedules delivery to the addressed protocol after a
sampled latency, on whatever loop is running (a `vclock.VirtualClockLoop` in the studies).

Why: the DHT protocol is an `asyncio.DatagramProtocol` that only calls `transport.sendto` and
`transport.get_extra_info("sockname")`; giving it this transport instead of a UDP socket runs
the real protocol code for thousands of nodes in one process, with no network traffic at all.
Nodes can be taken offline (datagrams to them vanish, as to a host that left) and every
datagram is counted, per sender, so studies can report messages per lookup.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

Address = tuple[str, int]


@dataclass
class LinkModel:
    """One-way latency: a base plus a log-normal part (median `median` s); `loss` drops datagrams."""

    base: float = 0.010
    median: float = 0.040
    sigma: float = 0.5
    loss: float = 0.0

    def sample(self, rng: random.Random) -> float:
        return self.base + self.median * rng.lognormvariate(0.0, self.sigma)


@dataclass
class MemoryNetwork:
    link: LinkModel = field(default_factory=LinkModel)
    seed: int = 0
    endpoints: dict[Address, asyncio.DatagramProtocol] = field(default_factory=dict)
    offline: set[Address] = field(default_factory=set)
    sent: Counter[Address] = field(default_factory=Counter)
    delivered: int = 0
    dropped: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def attach(self, address: Address, protocol: asyncio.DatagramProtocol) -> MemoryTransport:
        """Bind `protocol` to `address` and hand it its transport (as `connection_made` does)."""
        if address in self.endpoints:
            raise ValueError(f"address in use: {address}")
        transport = MemoryTransport(self, address)
        self.endpoints[address] = protocol
        protocol.connection_made(transport)  # type: ignore[arg-type]
        return transport

    def set_online(self, address: Address, online: bool) -> None:
        if online:
            self.offline.discard(address)
        else:
            self.offline.add(address)

    def send(self, source: Address, data: bytes, dest: Address) -> None:
        self.sent[source] += 1
        if source in self.offline or dest in self.offline or dest not in self.endpoints:
            self.dropped += 1
            return
        if self.link.loss and self.rng.random() < self.link.loss:
            self.dropped += 1
            return
        delay = self.link.sample(self.rng)
        asyncio.get_running_loop().call_later(delay, self._deliver, source, data, dest)

    def _deliver(self, source: Address, data: bytes, dest: Address) -> None:
        endpoint = self.endpoints.get(dest)
        if endpoint is None or dest in self.offline:  # it left while the datagram was in flight
            self.dropped += 1
            return
        self.delivered += 1
        endpoint.datagram_received(data, source)


class MemoryTransport(asyncio.DatagramTransport):
    """The part of a UDP transport that the DHT protocol uses."""

    def __init__(self, network: MemoryNetwork, address: Address) -> None:
        super().__init__()
        self._network = network
        self._address = address
        self._closed = False

    def sendto(self, data: Any, addr: Address | None = None) -> None:
        if self._closed or addr is None:
            return
        self._network.send(self._address, bytes(data), (addr[0], addr[1]))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._address if name == "sockname" else default

    def close(self) -> None:
        self._closed = True
        self._network.endpoints.pop(self._address, None)

    def is_closing(self) -> bool:
        return self._closed

    def abort(self) -> None:
        self.close()

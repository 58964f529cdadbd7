"""A network of real `DhtNode`s over `memnet` on virtual time: building it, Sybils, churn.

Every node is the project's `DhtNode` with its real `OnionmeshDhtProtocol` (ExactRoutingTable,
proof-before-admission, validating `DescriptorStore`), attached to an in-memory transport.
Two shortcuts, both stated in simulations/README.md:

* Routing tables are filled by handing each node, through the protocol's own `_admit` (the
  subnet rule and the package's bucket splitting apply), up to k random contacts from every
  prefix depth of the ID space: what a real join followed by bucket refreshes learns.  Real
  joins of 10,000 nodes would cost about N * (log N lookups) and add nothing measured here.
* Each relay's descriptor is placed at the k nodes closest to its key (what `publish` does in a
  converged network).  The first holder validates it with `DescriptorStore.offer`; the others
  receive the same validated entry, since validation is a pure function of the bytes and the
  clock (measured cost 0.11 ms, 160,000 repeats at 10,000 nodes would add ~18 s for nothing).

Sybils are `SybilProtocol`, a subclass of the real protocol: they prove their IDs honestly (so
honest nodes admit them) but answer FIND_NODE/FIND_VALUE with the colluding nodes closest to
the key only, withhold every value, answer FIND_VALUE with a forged descriptor half the time,
and drop what they are asked to store.  A node becomes a Sybil by switching its protocol class,
so nested Sybil sets (10 % within 20 % within 30 %) share one built network.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import random
from dataclasses import dataclass, field
from typing import Any

from kademlia.node import Node

from onionmesh.directory.descriptor import descriptor_key
from onionmesh.directory.placement import Candidate, ReplicaIndex, day_of
from onionmesh.runtime.dht.node import DhtNode
from onionmesh.runtime.dht.protocol import OnionmeshDhtProtocol
from simulations.memnet import MemoryNetwork
from simulations.relays import EPOCH, PyRng, Relay, make_relay, random_ip, tor_like_bandwidth

DHT_PORT = 9002


class Coalition:
    """What the colluding Sybils share: each other's contacts, sorted by ID, and a forged value."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.nodes: list[Node] = []
        self._ids: list[int] = []
        self.forged: bytes = b""

    def set_members(self, nodes: list[Node]) -> None:
        self.nodes = sorted(nodes, key=lambda n: n.long_id)
        self._ids = [n.long_id for n in self.nodes]

    def closest(self, key: bytes, k: int) -> list[Node]:
        """The k members closest (XOR) to key, searched in a window of the sorted IDs."""
        if not self.nodes:
            return []
        pos = bisect.bisect_left(self._ids, int.from_bytes(key, "big"))
        window = self.nodes[max(0, pos - 4 * k) : pos + 4 * k]
        target = Node(key)
        return heapq.nsmallest(k, window, key=target.distance_to)


class SybilProtocol(OnionmeshDhtProtocol):
    """The real protocol, answering lookups for the coalition (see the module docstring)."""

    coalition: Coalition

    def rpc_find_node(self, sender: tuple[str, int], nodeid: object, key: object, _pad: bytes = b"") -> Any:
        if not isinstance(key, bytes) or len(key) != 20:
            raise ValueError("bad id")
        return [list(n) for n in self.coalition.closest(key, self.router.ksize)]

    def rpc_find_value(self, sender: tuple[str, int], nodeid: object, key: object, _pad: bytes = b"") -> Any:
        if self.coalition.forged and self.coalition.rng.random() < 0.5:
            return {"value": self.coalition.forged}
        return self.rpc_find_node(sender, nodeid, key)

    def rpc_store(
        self, sender: tuple[str, int], nodeid: object, key: object, value: object, _pad: bytes = b""
    ) -> bool:
        return True  # accept, then drop


@dataclass
class SimNode:
    relay: Relay
    dht: DhtNode
    address: tuple[str, int]
    contact: Node

    @property
    def protocol(self) -> OnionmeshDhtProtocol:
        assert self.dht.protocol is not None
        return self.dht.protocol


@dataclass
class DhtNetwork:
    """N relays, each a DhtNode; `sybil` marks those currently malicious."""

    net: MemoryNetwork
    clock: Any
    nodes: list[SimNode] = field(default_factory=list)
    sybil: set[int] = field(default_factory=set)
    coalition: Coalition = field(default_factory=lambda: Coalition(random.Random(0)))

    def by_address(self) -> dict[tuple[str, int], int]:
        return {n.address: i for i, n in enumerate(self.nodes)}

    def set_sybils(self, indices: set[int]) -> None:
        """Make exactly these nodes malicious (the others honest) by switching protocol class."""
        self.sybil = set(indices)
        for i, node in enumerate(self.nodes):
            node.protocol.__class__ = SybilProtocol if i in self.sybil else OnionmeshDhtProtocol
        self.coalition.set_members([self.nodes[i].contact for i in self.sybil])
        if self.sybil:
            # A valid descriptor of a Sybil, offered under other keys: it verifies but is misfiled.
            self.coalition.forged = self.nodes[min(self.sybil)].relay.raw
        SybilProtocol.coalition = self.coalition


def build_network(
    n: int, net: MemoryNetwork, seed: int, ksize: int = 16, published: int = EPOCH
) -> DhtNetwork:
    """Create n relays and their DhtNodes attached to `net` (needs the running virtual loop);
    their descriptors are signed at `published` (valid 18 h: a study of later hours moves it)."""
    loop = asyncio.get_running_loop()

    def clock() -> float:
        return EPOCH + loop.time()

    pyr = random.Random(seed)
    keys = PyRng(seed)
    used: set[str] = set()
    network = DhtNetwork(net, clock, coalition=Coalition(random.Random(seed + 1)))
    for i in range(n):
        ip = random_ip(pyr, used)
        relay = make_relay(
            keys, i, ip, capacity=tor_like_bandwidth(pyr), exit_relay=pyr.random() < 0.2, published=published
        )
        dht = DhtNode(relay.identity, clock=clock, ksize=ksize)
        dht.descriptor_raw = relay.raw
        dht.protocol = dht._create_protocol()
        address = (ip, DHT_PORT)
        dht.transport = net.attach(address, dht.protocol)
        network.nodes.append(SimNode(relay, dht, address, Node(dht.node.id, ip, DHT_PORT)))
    return network


def _prefix_ranges(own: int, bits: int = 160) -> list[tuple[int, int]]:
    """For each depth d, the ID range sharing exactly d leading bits with `own`."""
    out = []
    for d in range(bits):
        shift = bits - d - 1
        sibling_prefix = (own >> shift) ^ 1
        out.append((sibling_prefix << shift, (sibling_prefix + 1) << shift))
    return out


def fill_routing_tables(network: DhtNetwork, seed: int, online: set[int] | None = None) -> None:
    """Give every node the contacts a converged join would have learned (see module docstring)."""
    rng = random.Random(seed)
    order = sorted(range(len(network.nodes)), key=lambda i: network.nodes[i].contact.long_id)
    ids = [network.nodes[i].contact.long_id for i in order]
    ksize = network.nodes[0].dht.ksize
    for node in network.nodes:
        own = node.contact.long_id
        for depth, (lo, hi) in enumerate(_prefix_ranges(own)):
            a, b = bisect.bisect_left(ids, lo), bisect.bisect_left(ids, hi)
            members = [order[j] for j in range(a, b)]
            if online is not None:
                members = [m for m in members if m in online]
            for m in rng.sample(members, min(ksize, len(members))):
                node.protocol._admit(network.nodes[m].contact)
            shift = 160 - depth - 1
            own_lo = (own >> shift) << shift
            if bisect.bisect_left(ids, own_lo + (1 << shift)) - bisect.bisect_left(ids, own_lo) <= 1:
                break  # nobody else shares this prefix: deeper buckets are empty


def place_descriptors(network: DhtNetwork, among: set[int] | None = None) -> int:
    """Store every relay's descriptor at the k nodes (of `among`) closest to its key; entries made."""
    pool = network.nodes if among is None else [network.nodes[i] for i in sorted(among)]
    order = sorted(pool, key=lambda n: n.contact.long_id)
    ids = [n.contact.long_id for n in order]
    ksize = network.nodes[0].dht.ksize
    placed = 0
    for node in network.nodes:
        key = descriptor_key(node.relay.fingerprint)
        pos = bisect.bisect_left(ids, int.from_bytes(key, "big"))
        window = order[max(0, pos - 4 * ksize) : pos + 4 * ksize]
        target = Node(key)
        holders = heapq.nsmallest(ksize, window, key=lambda h: target.distance_to(h.contact))
        first = holders[0].dht.storage
        first.offer(key, node.relay.raw)
        entry = first.relays._data.get(key)  # relay descriptors' half of the node's DhtStorage
        if entry is None:
            raise RuntimeError("a synthetic descriptor did not validate")
        for holder in holders[1:]:
            holder.dht.storage.relays._data[key] = entry
        placed += len(holders)
    return placed


def replica_index(
    network: DhtNetwork, members: set[int], first_seen: float = float("-inf")
) -> ReplicaIndex[int]:
    """The view-seeded placement index (directory.placement) over `members`, all aged (they have
    run since before the study: `first_seen` -inf), items = node indices."""
    return ReplicaIndex(
        (Candidate(network.nodes[i].contact.id, first_seen, i) for i in members), network.clock()
    )


def place_replicas(network: DhtNetwork, among: set[int]) -> int:
    """Also store every relay's descriptor at its view-seeded replicas (directory.placement),
    computed from the publisher's view = `among` (the nodes online at placement); entries made."""
    index = replica_index(network, among)
    day = day_of(network.clock())
    placed = 0
    for node in network.nodes:
        key = descriptor_key(node.relay.fingerprint)
        holders = index.replicas(key, day)
        first = network.nodes[holders[0].item].dht.storage
        first.offer(key, node.relay.raw)
        entry = first.relays._data.get(key)
        if entry is None:
            raise RuntimeError("a synthetic descriptor did not validate")
        for holder in holders[1:]:
            network.nodes[holder.item].dht.storage.relays._data[key] = entry
        placed += len(holders)
    return placed

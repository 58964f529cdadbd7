"""A DHT node: the `kademlia` package's Server with identity-bound IDs, disjoint lookups and crawling.

Every relay runs one (its ID is the hash of its identity key); clients run one without an
identity, which no honest node will add to its routing table.  On top of the package:

* `lookup(key)` runs S/Kademlia's lookup over `DISJOINT_PATHS` paths that never share a node,
  so one clean path is enough; for values, every answer is verified and the newest valid
  descriptor wins (not the most common answer of the first round, as in the package).
* `publish(raw)` stores a relay's descriptor at the nodes closest to its key;
  `publish_hs(raw)` stores an onion-service record at the nodes closest to each of its four
  replica keys (directory.hs_placement), each replica through its own disjoint lookup.
* Values of both kinds are told apart by the value itself (directory.dht_storage) and verified
  by every holder and every reader; for onion-service records the newest revision wins.
* `crawl()` enumerates the whole network and fetches every node's descriptor from the node
  itself, verified; it is how clients discover relays (docs/protocol.md, "Discovery").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kademlia.network import Server
from kademlia.node import Node, NodeHeap

from onionmesh.crypto.keys import IdentityKey
from onionmesh.directory.descriptor import RelayDescriptor, decode_and_verify, descriptor_key
from onionmesh.directory.dht_records import node_id_for, sign_hello
from onionmesh.directory.dht_storage import DhtStorage, is_hs_record
from onionmesh.directory.hs_descriptor import OuterRecord, parse_record
from onionmesh.directory.hs_placement import HsStoreResult, check_for_storage, store_keys
from onionmesh.errors import OnionmeshError
from onionmesh.runtime.dht.protocol import OnionmeshDhtProtocol
from onionmesh.runtime.loglimit import limited
from onionmesh.runtime.safelog import get_logger

log = get_logger("onionmesh.dht")
peer_log = limited(log)  # lines a remote node can cause again and again: rate-limited

# The package logs peers' addresses and values through the standard library; onionmesh's logs
# are structlog's, scrubbed. Silence the package entirely.
for _name in ("kademlia", "rpcudp"):
    _pkg_log = logging.getLogger(_name)
    _pkg_log.setLevel(logging.CRITICAL + 1)
    _pkg_log.propagate = False

KSIZE = 16
ALPHA = 3
DISJOINT_PATHS = 4
# Per path, the candidates a lookup keeps: 2k, not k (docs/directory-design.md §5), so a round of
# colluding answers that fills the heap with Sybils does not push every honest candidate out.
CANDIDATE_FACTOR = 2
# Density check: with N running relays known, the j-th nearest node to a key is expected at XOR
# distance about j * 2^160 / N.  A find_node answer whose every contact is at least this many
# times farther than expected hides the key's neighbourhood; its contacts are queried last.
DENSITY_FACTOR = 8
REPLICA_BATCH = 4  # view-seeded lookups ask this many replicas at a time (one per position)
CRAWL_TARGETS_PER_NODE = 2
CRAWL_CONCURRENCY = 64  # nodes visited at once (each visit: a descriptor RPC, then 3 FIND_NODEs)
CRAWL_MAX_NODES = 20_000  # addresses a crawl will visit; NetView keeps at most as many relays
BOOTSTRAP_TRIES = 3  # a bootstrap contact is asked this many times before it counts as dead
CRAWL_DEADLINE = 60.0  # at least; longer on slow paths (crawl_deadline)
CRAWL_DEADLINE_RTOS = 40  # a crawl may take this many RPC timeouts at the measured RTT ...
CRAWL_DEADLINE_MAX = 600.0  # ... but never more


def crawl_deadline(rto: float) -> float:
    """How long a crawl may run: 60 s, or 40 RPC timeouts where the path is slow (a crawl is a
    few sequential rounds of RPCs, each of which may time out once and be retried)."""
    return min(max(CRAWL_DEADLINE, CRAWL_DEADLINE_RTOS * rto), CRAWL_DEADLINE_MAX)


@dataclass
class LookupResult:
    nodes: list[Node]
    descriptor: RelayDescriptor | None = None
    raw: bytes | None = None
    rounds: list[int] = field(default_factory=list)  # per path: how many hops it took
    queries: int = 0
    forged: int = 0  # values that did not verify
    hs_record: OuterRecord | None = None  # for an onion-service key: the newest valid revision
    deferred: int = 0  # find_node answers the density check put last


def hides_neighbourhood(contacts: list[Node], target: Node, network_size: int) -> bool:
    """True if every contact is ≥ DENSITY_FACTOR times farther from `target` than the j-th
    nearest of `network_size` uniformly placed IDs is expected to be (j = its rank)."""
    if network_size <= 0 or not contacts:
        return False
    unit = 2**160 // network_size
    dists = sorted(target.distance_to(n) for n in contacts)
    return all(d >= DENSITY_FACTOR * (j + 1) * unit for j, d in enumerate(dists))


class DhtNode(Server):
    def __init__(
        self,
        identity: IdentityKey | None = None,
        *,
        clock: Callable[[], float] = time.time,
        ksize: int = KSIZE,
        alpha: int = ALPHA,
        max_stored: int = 10_000,
        max_hs_stored: int = 10_000,
    ) -> None:
        node_id = node_id_for(identity.public) if identity is not None else os.urandom(20)
        store = DhtStorage(clock, max_stored, max_hs_stored)
        super().__init__(ksize, alpha, node_id, storage=store)
        self.storage: DhtStorage = store  # set again: the package tests `storage or ...`, and empty is falsy
        self.identity = identity
        self.clock = clock
        self.descriptor_raw: bytes | None = None
        self.protocol: OnionmeshDhtProtocol | None = None
        # Running relays in the owner's view (0: unknown, no density check); set by whoever holds one.
        self.network_size = 0

    def _own(self) -> tuple[bytes, Callable[[bytes], bytes]] | None:
        if self.identity is None or self.descriptor_raw is None:
            return None
        identity = self.identity
        return self.descriptor_raw, lambda nonce: sign_hello(identity, nonce)

    def _create_protocol(self) -> OnionmeshDhtProtocol:
        return OnionmeshDhtProtocol(self.node, self.storage, self.ksize, self._own, self.clock)

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    def stop(self) -> None:
        if self.protocol is not None:
            self.protocol.close()
        super().stop()

    # --- joining -------------------------------------------------------------------------------
    async def bootstrap(self, addrs: list[tuple[str, int]]) -> list[Node]:
        """Verify the given contacts, then look up our own ID through them to fill the table."""
        assert self.protocol is not None
        proven = await asyncio.gather(*(self._prove(a) for a in addrs))
        nodes = []
        for addr, desc in zip(addrs, proven, strict=True):
            if desc is None:
                continue
            node = Node(node_id_for(desc.identity_pk), addr[0], addr[1])
            self.protocol.welcome_if_new(node)
            nodes.append(node)
        if not nodes:
            return []
        result = await self.lookup(self.node.id, seeds=nodes)
        await self.refresh_buckets()
        return result.nodes

    async def _prove(self, addr: tuple[str, int]) -> RelayDescriptor | None:
        """A bootstrap contact's verified descriptor, asked up to BOOTSTRAP_TRIES times: a lost
        datagram at joining time must not leave a relay outside the network until its next
        refresh (at 1 % loss per crossing a testnet took 69 s instead of 10 to find its fifth relay)."""
        assert self.protocol is not None
        for _ in range(BOOTSTRAP_TRIES):
            desc = await self.protocol.fetch_descriptor(addr, None)
            if desc is not None:
                return desc
        return None

    async def refresh_buckets(self) -> None:
        """Look up a random ID in every bucket (Kademlia §2.3), so that far parts of the ID space are
        known too and no single contact carries all routing between them."""
        assert self.protocol is not None
        targets = [
            random.randint(*bucket.range).to_bytes(20, "big") for bucket in list(self.protocol.router.buckets)
        ]
        await asyncio.gather(*(self.lookup(t) for t in targets))

    # --- lookups -------------------------------------------------------------------------------
    async def lookup(
        self, key: bytes, *, want_value: bool = False, seeds: list[Node] | None = None
    ) -> LookupResult:
        """S/Kademlia lookup over disjoint paths; for values, the newest descriptor that verifies."""
        assert self.protocol is not None
        protocol = self.protocol
        target = Node(key)
        seeds = seeds or protocol.router.find_neighbors(target, k=self.ksize)
        result = LookupResult(nodes=[])
        claimed: set[bytes] = {self.node.id}
        responded: dict[bytes, Node] = {}
        paths = [NodeHeap(target, CANDIDATE_FACTOR * self.ksize) for _ in range(DISJOINT_PATHS)]
        for i, seed in enumerate(sorted(seeds, key=lambda n: n.distance_to(target))):
            paths[i % DISJOINT_PATHS].push(seed)
        size = self.network_size

        async def walk(heap: NodeHeap) -> None:
            rounds = 0
            later: list[Node] = []  # contacts of answers the density check distrusts
            while True:
                batch = [n for n in heap.get_uncontacted() if n.id not in claimed][: self.alpha]
                for n in heap.get_uncontacted():
                    if n.id in claimed:
                        heap.mark_contacted(n)
                if not batch and later:
                    heap.push([n for n in later if n.id not in claimed])
                    later.clear()
                    continue
                if not batch:
                    break
                rounds += 1
                for n in batch:
                    claimed.add(n.id)
                    heap.mark_contacted(n)
                call = protocol.call_find_value if want_value else protocol.call_find_node
                answers = await asyncio.gather(*(call(n, target) for n in batch))
                result.queries += len(batch)
                found = False
                for node, (ok, data) in zip(batch, answers, strict=True):
                    if not ok:
                        heap.remove([node.id])
                        continue
                    responded[node.id] = node
                    if isinstance(data, dict):
                        found |= self._take_value(result, key, data["value"])
                    elif data:
                        contacts = [Node(*n) for n in data if n[0] not in claimed]
                        if hides_neighbourhood([Node(*n) for n in data], target, size):
                            result.deferred += 1
                            later += contacts
                        else:
                            heap.push(contacts)
                if found:
                    break
            result.rounds.append(rounds)

        await asyncio.gather(*(walk(p) for p in paths if len(p)))
        result.nodes = sorted(responded.values(), key=lambda n: n.distance_to(target))[: self.ksize]
        return result

    async def lookup_replicas(
        self, key: bytes, replicas: list[Node], batch: int = REPLICA_BATCH
    ) -> LookupResult:
        """View-seeded lookup: ask the replicas the caller computed (directory.placement), in order,
        `batch` at a time, until one gives a value that verifies; no routing, no candidate heap."""
        assert self.protocol is not None
        target = Node(key)
        result = LookupResult(nodes=[])
        rounds = 0
        for start in range(0, len(replicas), batch):
            group = replicas[start : start + batch]
            rounds += 1
            answers = await asyncio.gather(*(self.protocol.call_find_value(n, target) for n in group))
            result.queries += len(group)
            found = False
            for node, (ok, data) in zip(group, answers, strict=True):
                if ok:
                    result.nodes.append(node)
                    if isinstance(data, dict):
                        found |= self._take_value(result, key, data["value"])
            if found:
                break
        result.rounds.append(rounds)
        return result

    def _take_value(self, result: LookupResult, key: bytes, raw: bytes) -> bool:
        if is_hs_record(raw):  # every check a storing node makes, by the reader too
            record = check_for_storage(key, raw, self.clock())
            if isinstance(record, HsStoreResult):
                result.forged += 1
                return False
            if result.hs_record is None or record.revision > result.hs_record.revision:
                result.hs_record, result.raw = record, raw
            return True
        try:
            desc = decode_and_verify(raw, self.clock())
        except OnionmeshError:
            result.forged += 1
            return False
        if desc.dht_key != key:
            result.forged += 1
            return False
        if result.descriptor is None or desc.published > result.descriptor.published:
            result.descriptor, result.raw = desc, raw
        return True

    async def get_descriptor(self, fingerprint: str) -> LookupResult:
        return await self.lookup(descriptor_key(fingerprint), want_value=True)

    # --- publishing ----------------------------------------------------------------------------
    async def publish(self, raw: bytes) -> int:
        """Store a descriptor at the nodes closest to its key; how many accepted it."""
        assert self.protocol is not None
        key = decode_and_verify(raw, self.clock()).dht_key
        found = await self.lookup(key)
        if not found.nodes or self.node.distance_to(Node(key)) < found.nodes[-1].distance_to(Node(key)):
            self.storage[key] = raw
        results = await asyncio.gather(*(self.protocol.call_store(n, key, raw) for n in found.nodes))
        return sum(1 for ok, accepted in results if ok and accepted)

    async def publish_hs(self, raw: bytes, seeds: Callable[[bytes], list[Node]] | None = None) -> list[int]:
        """Store an onion-service record at the nodes closest to each of its four replica keys,
        one disjoint lookup per replica, all at once; per replica, how many nodes accepted it.
        `seeds(key)` adds starting contacts (a DHT node over circuits has no routing table of its
        own).  A service runs this on a DHT node whose RPCs go through circuits: the storing
        nodes must not see its address."""
        record = parse_record(raw)
        keys = store_keys(record.blinded_pk, record.period)
        return list(
            await asyncio.gather(*(self._store_at(k, raw, seeds(k) if seeds else None) for k in keys))
        )

    async def _store_at(self, key: bytes, raw: bytes, seeds: list[Node] | None = None) -> int:
        assert self.protocol is not None
        found = await self.lookup(key, seeds=seeds)
        if self.identity is not None and (
            not found.nodes or self.node.distance_to(Node(key)) < found.nodes[-1].distance_to(Node(key))
        ):
            self.storage[key] = raw
        results = await asyncio.gather(*(self.protocol.call_store(n, key, raw) for n in found.nodes))
        return sum(1 for ok, accepted in results if ok and accepted)

    async def set_digest(self, dkey: bytes, value: bytes) -> bool:
        """The package's hourly republication of held values goes through validation too."""
        if is_hs_record(value):
            if isinstance(check_for_storage(dkey, value, self.clock()), HsStoreResult):
                return False
            return await self._store_at(dkey, value) > 0
        with contextlib.suppress(OnionmeshError):
            if decode_and_verify(value, self.clock()).dht_key == dkey:
                return await self.publish(value) > 0
        return False

    # --- discovery -----------------------------------------------------------------------------
    async def crawl(
        self,
        max_nodes: int = CRAWL_MAX_NODES,
        extra: list[tuple[str, int]] | None = None,
        deadline: float | None = None,
    ) -> list[RelayDescriptor]:
        """Enumerate the network (FIND_NODE around every node found) and fetch each node's descriptor.

        Every descriptor comes from the node itself, proven (signature over our nonce) and
        verified; the result is the same for every client, whatever relays it later picks.
        A pool of CRAWL_CONCURRENCY workers takes addresses as they are learned (no waves: one
        slow or dead node holds up one worker, not the crawl).
        """
        assert self.protocol is not None
        protocol = self.protocol
        if deadline is None:
            deadline = crawl_deadline(protocol.rtt.all.rto())
        known: set[tuple[str, int]] = set()
        queue: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
        descriptors: dict[str, RelayDescriptor] = {}

        def learn(addr: tuple[str, int]) -> None:
            if addr not in known and len(known) < max_nodes:
                known.add(addr)
                queue.put_nowait(addr)

        for node in protocol.router.find_neighbors(self.node, k=10_000):
            learn((node.ip, node.port))
        for addr in extra or []:
            learn(addr)

        retried: set[tuple[str, int]] = set()

        async def visit(addr: tuple[str, int]) -> None:
            desc = await protocol.fetch_descriptor(addr, None)
            if desc is None:
                if addr not in retried:  # once more, at the back of the queue: a loss or a busy node
                    retried.add(addr)
                    queue.put_nowait(addr)
                return
            descriptors[desc.fingerprint] = desc
            me = Node(node_id_for(desc.identity_pk), addr[0], addr[1])
            targets = [me.id] + [os.urandom(20) for _ in range(CRAWL_TARGETS_PER_NODE)]
            answers = await asyncio.gather(*(protocol.call_find_node(me, Node(t)) for t in targets))
            for ok, data in answers:
                for n in data if ok and data else []:
                    learn((n[1], n[2]))

        async def worker() -> None:
            while True:
                addr = await queue.get()
                try:
                    await visit(addr)
                except Exception as exc:  # one node's oddity must not end the crawl
                    peer_log.debug("crawl: visit failed", error=type(exc).__name__)
                finally:
                    queue.task_done()

        async def run() -> None:
            workers = [asyncio.create_task(worker(), name="dht-crawl") for _ in range(CRAWL_CONCURRENCY)]
            try:
                await queue.join()
            finally:
                for task in workers:
                    task.cancel()
                await asyncio.gather(*workers, return_exceptions=True)

        # Liars can hand out dead addresses, each costing a timeout: the crawl is bounded in time and
        # keeps what it verified so far.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(deadline):
                await run()
        return list(descriptors.values())

"""The DHT directory at scale, in one process on loopback, as `name value unit` lines.

For each network size N, N relay `DhtNode`s on real UDP sockets, each on its own /24 of 127/8
(127.0.{i+1}.1, then 127.1.{i-253}.1, ...), so the routing table's two-per-/24-per-bucket limit
never binds; clients sit on 127.250.{k}.1.  Reported per size:
  - bootstrap_s: all relays bootstrapping from relay 0 (bounded concurrency), wall time
  - table_*: routing tables after bootstrap (median/max size, contacts in the other half of the
    ID space, relays with none there) and find_neighbors_short_frac, how often the package's
    `RoutingTable.find_neighbors(k)` returns fewer than k contacts although the table holds k
  - publish_s, publish_accepted_median: every honest relay publishing its descriptor, and how
    many nodes said they took it; replicas_*: how many honest relays really hold it, and how
    many of the 16 honest relays closest to its key do
  - discovery_s, discovered, discovered_frac: a fresh client crawling the whole network
  - lookup_*: a bootstrapped client fetching random relays' descriptors (`get_descriptor`):
    latency (ms), hops (per lookup the max over the disjoint paths of their rounds: median and
    mean; path_hops_mean averages over paths instead), queries, success (exactly the published
    descriptor); `_1path` with `DISJOINT_PATHS = 1`, by a second client, alternating with the
    default lookups.  Those clients keep what they learn, so after a few lookups they know most
    relays; `_cold` lookups are each made by a freshly bootstrapped client (first --cold targets)
  - maliciousP.*: the same on a network of the same relays with P% of them (never relay 0)
    hostile from the start.  A hostile relay proves its ID honestly (so it enters routing
    tables) but black-holes STOREs (answering "stored"), answers FIND_NODE with only its
    accomplices closest to the key (eclipse), and answers FIND_VALUE half the time with a forged
    descriptor (the real one with an attacker link address, a newer `published` and the old
    signature; or the attacker's own, validly signed, under the wrong key) and otherwise with
    accomplices.  The accomplices know each other and every honest descriptor, and each has its
    own /24: the strongest case for the attacker (no subnet limit helps).  forged_seen counts
    forged values the lookups rejected; lookup_wrong counts lookups that returned a descriptor
    other than the published one (must be 0).
  - rpc_timeouts / subnet_limited / rate_limited: protocol counters summed over all nodes
  - rss_mb: the process's peak RSS so far (ru_maxrss, so it only grows from size to size)

    python bench/dht.py [--sizes 50,200] [--lookups 100] [--cold 20] [--malicious 0.1,0.2]

Defaults: sizes 50,200, 100 warm and 20 cold lookups per measurement.  A lookup takes a few ms
on loopback, so 200 relays did not need fewer lookups; the CPU goes to bootstrapping and
publishing (every node verifies every contact's signed hello).  The default run takes about a
minute and a half on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kademlia.node import Node

import onionmesh.runtime.dht.node as dht_module
from onionmesh.crypto.keys import IdentityKey, OnionKey, OnionKeyCert
from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.rng import SeededRng
from onionmesh.runtime import safelog
from onionmesh.runtime.dht.node import DhtNode, LookupResult
from onionmesh.runtime.dht.protocol import WAIT_TIMEOUT, OnionmeshDhtProtocol

BOOTSTRAP_CONCURRENCY = 16
PUBLISH_CONCURRENCY = 16
FORGE_PROBABILITY = 0.5  # hostile FIND_VALUE answers: forged value, else accomplices
SETTLE_S = 2 * WAIT_TIMEOUT  # let pending hello verifications finish or time out


def relay_host(i: int) -> str:
    """One relay per /24: 127.0.1.1 .. 127.0.254.1, then 127.1.1.1 .. and so on."""
    return f"127.{i // 254}.{i % 254 + 1}.1"


def client_host(k: int) -> str:
    return f"127.250.{k + 1}.1"


def p90(values: list[float]) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(0.9 * (len(values) - 1)))]


# --- the adversary ---------------------------------------------------------------------------------
def _is_id(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == 20


@dataclass
class Adversary:
    """What the colluding relays share: who they are, and the honest descriptors they tamper with."""

    rng: random.Random
    members: list[Node] = field(default_factory=list)
    known: dict[bytes, bytes] = field(default_factory=dict)  # key -> honest raw, as a crawl gives

    def accomplices(self, key: bytes, me: bytes, ksize: int) -> list[list[Any]]:
        target = Node(key)
        peers = sorted((n for n in self.members if n.id != me), key=lambda n: n.distance_to(target))
        return [list(n) for n in peers[:ksize]]

    def forge(self, key: bytes, own_raw: bytes, own_host: str) -> bytes:
        real = self.known.get(key)
        if real is not None and self.rng.random() < 0.5:
            desc = RelayDescriptor.decode(real)
            tampered = replace(desc, link_addresses=((own_host, 9000),), published=desc.published + 1)
            return tampered.encode()  # well-formed, newer, signature no longer matches
        return own_raw  # validly signed, but the attacker's own: stored under another key


class EclipseProtocol(OnionmeshDhtProtocol):
    """Honest hello (IDs proven, so it gets into routing tables); everything else lies."""

    adversary: Adversary

    def rpc_store(
        self, sender: tuple[str, int], nodeid: object, key: object, value: object, _pad: bytes = b""
    ) -> bool:
        if not _is_id(nodeid):
            raise ValueError("bad node id")
        self.welcome_if_new(Node(nodeid, sender[0], sender[1]))
        return True  # "stored", and dropped

    def rpc_find_node(
        self, sender: tuple[str, int], nodeid: object, key: object, _pad: bytes = b""
    ) -> list[Any]:
        if not _is_id(nodeid) or not _is_id(key):
            raise ValueError("bad id")
        self.welcome_if_new(Node(nodeid, sender[0], sender[1]))
        return self.adversary.accomplices(key, self.source_node.id, self.router.ksize)

    def rpc_find_value(self, sender: tuple[str, int], nodeid: object, key: object, _pad: bytes = b"") -> Any:
        if not _is_id(nodeid) or not _is_id(key):
            raise ValueError("bad id")
        own = self.own_descriptor()
        if own is not None and self.adversary.rng.random() < FORGE_PROBABILITY:
            assert self.transport is not None
            host = self.transport.get_extra_info("sockname")[0]
            return {"value": self.adversary.forge(key, own[0], host)}
        return self.rpc_find_node(sender, nodeid, key)


class HostileDhtNode(DhtNode):
    def __init__(self, identity: IdentityKey, adversary: Adversary) -> None:
        super().__init__(identity)
        self.adversary = adversary

    def _create_protocol(self) -> OnionmeshDhtProtocol:
        protocol = EclipseProtocol(self.node, self.storage, self.ksize, self._own, self.clock)
        protocol.adversary = self.adversary
        return protocol


# --- the network -----------------------------------------------------------------------------------
@dataclass
class Net:
    relays: list[DhtNode]
    raws: list[bytes]
    hostile: set[int]
    clients: list[DhtNode] = field(default_factory=list)

    @property
    def honest(self) -> list[int]:
        return [i for i in range(len(self.relays)) if i not in self.hostile]

    async def client(self) -> DhtNode:
        node = DhtNode(None)
        await node.listen(0, client_host(len(self.clients)))
        self.clients.append(node)
        return node

    def stats(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for node in self.relays + self.clients:
            if node.protocol is not None:
                total.update(node.protocol.stats)
        return total

    async def stop(self) -> None:
        for node in self.relays + self.clients:
            node.stop()
        await asyncio.sleep(SETTLE_S)  # stray pings and verifications time out


async def build(n: int, hostile_frac: float, seed: int) -> Net:
    rng = SeededRng(seed)
    pick = random.Random(seed)
    hostile = set(pick.sample(range(1, n), round(n * hostile_frac))) if hostile_frac > 0 else set()
    adversary = Adversary(random.Random(seed + 1))
    now = int(time.time())
    relays: list[DhtNode] = []
    raws: list[bytes] = []
    for i in range(n):
        ident = IdentityKey.generate(rng)
        node = HostileDhtNode(ident, adversary) if i in hostile else DhtNode(ident)
        await node.listen(0, relay_host(i))
        host, port = node.address
        desc = RelayDescriptor.create(
            identity=ident,
            onion_cert=OnionKeyCert.issue(ident, OnionKey.generate(rng).public, now - 60, now + 86400),
            nickname=f"n{i}",
            link_addresses=((host, 9000),),
            dht_contact=(host, port),
            exit_policy="",
            bandwidth=1000,
            published=now,
        )
        node.descriptor_raw = desc.encode()
        relays.append(node)
        raws.append(node.descriptor_raw)
        if i in hostile:
            adversary.members.append(Node(node.node.id, host, port))
        else:
            adversary.known[desc.dht_key] = node.descriptor_raw
    return Net(relays, raws, hostile)


async def bounded(limit: int, coros: list[Any]) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(coro: Any) -> Any:
        async with sem:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


async def bootstrap(net: Net) -> float:
    seed = [net.relays[0].address]
    t0 = time.perf_counter()
    await bounded(BOOTSTRAP_CONCURRENCY, [node.bootstrap(seed) for node in net.relays[1:]])
    elapsed = time.perf_counter() - t0
    await asyncio.sleep(SETTLE_S)
    return elapsed


async def publish(net: Net) -> tuple[float, list[int], list[int], list[int]]:
    """Honest relays publish.  Wall s; per descriptor: how many said they took it, how many honest
    relays hold it, and how many of the 16 honest relays closest to its key hold it."""
    honest = net.honest
    t0 = time.perf_counter()
    accepted = await bounded(PUBLISH_CONCURRENCY, [net.relays[i].publish(net.raws[i]) for i in honest])
    elapsed = time.perf_counter() - t0
    await asyncio.sleep(SETTLE_S)
    holders, at_closest = [], []
    for i in honest:
        raw = net.raws[i]
        key = Node(RelayDescriptor.decode(raw).dht_key)
        have = [j for j in honest if net.relays[j].storage.get(key.id) == raw]
        closest = sorted(honest, key=lambda j: net.relays[j].node.distance_to(key))[: dht_module.KSIZE]
        holders.append(len(have))
        at_closest.append(len(set(have) & set(closest)))
    return elapsed, accepted, holders, at_closest


def table_report(p: str, net: Net, seed: int) -> None:
    """Routing tables after bootstrap: size, contacts in the other half of the ID space, and how
    often the package's `find_neighbors(k)` returns fewer than k contacts the table does hold."""
    sizes, far = [], []
    short = asked = 0
    pick = random.Random(seed)
    for node in net.relays:
        assert node.protocol is not None
        router = node.protocol.router
        contacts = [c for bucket in router.buckets for c in bucket.get_nodes()]
        sizes.append(len(contacts))
        far.append(sum(1 for c in contacts if (c.long_id ^ node.node.long_id) >> 159))
        for _ in range(10):
            target = Node(pick.randbytes(20))
            asked += 1
            short += len(router.find_neighbors(target, k=router.ksize)) < min(router.ksize, len(contacts))
    out(f"{p}.table_size_median", statistics.median(sizes), "contacts", ".1f")
    out(f"{p}.table_size_max", max(sizes), "contacts", "d")
    out(f"{p}.table_far_half_median", statistics.median(far), "contacts", ".1f")
    out(f"{p}.table_far_half_none", sum(1 for f in far if f == 0), "relays", "d")
    out(f"{p}.find_neighbors_short_frac", short / asked, "ratio", ".3f")


@dataclass
class Lookups:
    ms: list[float] = field(default_factory=list)
    hops_max: list[int] = field(default_factory=list)
    hops_mean: list[float] = field(default_factory=list)
    queries: list[int] = field(default_factory=list)
    ok: int = 0
    wrong: int = 0  # a descriptor came back, but not the published one (must stay 0)
    forged: int = 0

    def add(self, result: LookupResult, ms: float, expected: bytes) -> None:
        self.ms.append(ms)
        self.hops_max.append(max(result.rounds, default=0))
        self.hops_mean.append(statistics.fmean(result.rounds) if result.rounds else 0.0)
        self.queries.append(result.queries)
        self.forged += result.forged
        if result.raw == expected:
            self.ok += 1
        elif result.raw is not None:
            self.wrong += 1

    @property
    def success(self) -> float:
        return self.ok / len(self.ms) if self.ms else 0.0


async def lookups(net: Net, count: int, cold: int, seed: int) -> dict[str, Lookups]:
    """`count` random honest relays looked up with the default number of disjoint paths by one
    bootstrapped client and with one path by another, alternately ("warm": each client keeps
    what it learns); then the first `cold` of them, each by a freshly bootstrapped client."""
    pick = random.Random(seed)
    honest = net.honest
    targets = [pick.choice(honest) for _ in range(count)]
    default_paths = dht_module.DISJOINT_PATHS
    runs = {k: Lookups() for k in ("warm", "warm_1path", "cold", "cold_1path")}
    contact = [net.relays[0].address]
    warm, warm1 = await net.client(), await net.client()
    colds = [await net.client() for _ in range(2 * min(cold, count))]
    await asyncio.gather(*(c.bootstrap(contact) for c in [warm, warm1, *colds]))
    await asyncio.sleep(SETTLE_S)
    plan = [step for i in targets for step in ((warm, i, default_paths, "warm"), (warm1, i, 1, "warm_1path"))]
    for k, i in enumerate(targets[:cold]):
        plan += [(colds[2 * k], i, default_paths, "cold"), (colds[2 * k + 1], i, 1, "cold_1path")]
    try:
        for client, i, paths, name in plan:
            fingerprint = RelayDescriptor.decode(net.raws[i]).fingerprint
            dht_module.DISJOINT_PATHS = paths  # a module global, read by lookup() at each call
            t0 = time.perf_counter()
            result = await client.get_descriptor(fingerprint)
            runs[name].add(result, (time.perf_counter() - t0) * 1000, net.raws[i])
    finally:
        dht_module.DISJOINT_PATHS = default_paths
    return runs


def out(name: str, value: float, unit: str, fmt: str = ".2f") -> None:
    print(f"{name} {value:{fmt}} {unit}", flush=True)


def report_counters(prefix: str, net: Net) -> None:
    stats = net.stats()
    out(f"{prefix}.rpc_timeouts", stats["timeouts"], "rpcs", "d")
    out(f"{prefix}.subnet_limited", stats["subnet_limited"], "contacts", "d")
    out(f"{prefix}.rate_limited", stats["rate_limited"], "requests", "d")


async def run(n: int, frac: float, count: int, cold: int, seed: int) -> None:
    p = f"dht.n{n}" if frac == 0 else f"dht.n{n}.malicious{round(frac * 100)}"
    net = await build(n, frac, seed)
    try:
        out(f"{p}.bootstrap_s", await bootstrap(net), "s")
        table_report(p, net, seed)
        elapsed, accepted, holders, at_closest = await publish(net)
        out(f"{p}.publish_s", elapsed, "s")
        out(f"{p}.publish_accepted_median", statistics.median(accepted), "nodes", ".1f")
        out(f"{p}.replicas_median", statistics.median(holders), "nodes", ".1f")  # honest holders only
        out(f"{p}.replicas_min", min(holders), "nodes", "d")
        out(f"{p}.replicas_at_closest_median", statistics.median(at_closest), "nodes", ".1f")

        crawler = await net.client()
        t0 = time.perf_counter()
        found = await crawler.crawl(extra=[net.relays[0].address])
        out(f"{p}.discovery_s", time.perf_counter() - t0, "s")
        out(f"{p}.discovered", len(found), "nodes", "d")
        out(f"{p}.discovered_frac", len(found) / n, "ratio", ".3f")

        runs = await lookups(net, count, cold, seed)
        for suffix, kind in (
            ("", "warm"),
            ("_1path", "warm_1path"),
            ("_cold", "cold"),
            ("_cold_1path", "cold_1path"),
        ):
            r = runs[kind]
            if not r.ms:
                continue
            if frac == 0 or suffix in ("", "_cold"):
                out(f"{p}.lookup_ms_median{suffix}", statistics.median(r.ms), "ms")
            if frac == 0 and suffix == "":
                out(f"{p}.lookup_ms_p90", p90(r.ms), "ms")
            if frac == 0:
                out(f"{p}.lookup_hops_median{suffix}", statistics.median(r.hops_max), "hops", ".1f")
                out(f"{p}.lookup_hops_mean{suffix}", statistics.fmean(r.hops_max), "hops")
                out(f"{p}.lookup_path_hops_mean{suffix}", statistics.fmean(r.hops_mean), "hops")
            out(f"{p}.lookup_queries_median{suffix}", statistics.median(r.queries), "queries", ".1f")
            out(f"{p}.lookup_success{suffix}", r.success, "ratio", ".3f")
            if frac > 0:
                out(f"{p}.lookup_forged_seen{suffix}", r.forged, "values", "d")
        out(f"{p}.lookup_wrong", sum(r.wrong for r in runs.values()), "lookups", "d")
        report_counters(p, net)
    finally:
        await net.stop()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="50,200")
    ap.add_argument("--lookups", type=int, default=100)
    ap.add_argument("--cold", type=int, default=20, help="lookups by freshly bootstrapped clients")
    ap.add_argument("--malicious", default="0.1,0.2", help="hostile fractions; empty for none")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    safelog.configure("error")
    sizes = [int(s) for s in args.sizes.split(",") if s]
    fractions = [float(f) for f in args.malicious.split(",") if f]
    for n in sizes:
        for frac in [0.0, *fractions]:  # same seed: same relays, some of them turned hostile
            await run(n, frac, args.lookups, args.cold, args.seed * 1000 + n)
        rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out(f"dht.n{n}.rss_mb", rss_kb / 1024, "MB", ".1f")


if __name__ == "__main__":
    asyncio.run(main())

"""Study 1: DHT discovery at 1,000 and 10,000 relays, with churn and 0-30 % Sybils.

    python -m simulations.dht_discovery [--quick] [--seed N] [--out DIR]

Real code under test: `onionmesh.runtime.dht.node.DhtNode` (bootstrap, S/Kademlia disjoint-path
lookup, verification of every value), `OnionmeshDhtProtocol` (proof-before-admission, subnet
limit, ExactRoutingTable) and `DescriptorStore`, over `memnet` on virtual time.  Fresh clients
join through 3 random online nodes with the real `bootstrap`, then look up descriptors of random
online honest relays, each once with d = 4 disjoint paths (onionmesh's setting) and once with
d = 1 (plain Kademlia with verified values).  See simulations/README.md for what is simplified.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from dataclasses import dataclass, field

from kademlia.node import Node

import onionmesh.runtime.dht.node as dht_mod
from onionmesh.directory.descriptor import descriptor_key
from onionmesh.directory.placement import ReplicaIndex, day_of
from onionmesh.runtime.dht.node import DhtNode
from simulations import dir_view, vclock
from simulations.churn import Churn, SessionModel
from simulations.dht_sim import (
    DhtNetwork,
    build_network,
    fill_routing_tables,
    place_descriptors,
    place_replicas,
    replica_index,
)
from simulations.memnet import MemoryNetwork
from simulations.relays import random_ip
from simulations.report import out_path, pct, table

WARMUP = 1800.0  # virtual seconds of churn between building the tables and the first lookup
VIEW_LAG = 900.0  # the readers' view is the set of relays running this long before the lookups
# Lookup modes: iterative with d = 4 and d = 1 from the routing table (as before); "4v" iterative
# d = 4 seeded from the view's 16 nearest relays with the density check; "view" asks the
# view-seeded replicas directly (directory.placement, docs/directory-design.md §5).
MODES = ("view", "4v", "4", "1")


@dataclass
class Lookup:
    paths: str
    ok: bool
    rounds: int
    queries: int
    datagrams: int
    forged: int
    sybil_share: float  # of the k nodes the lookup returned


@dataclass
class Scenario:
    n: int
    fraction: float
    lookups: list[Lookup] = field(default_factory=list)
    churn: bool = True
    client_sybil_share: list[float] = field(default_factory=list)  # routing table after bootstrap
    rate_limited: int = 0
    crawl: dict[str, float] = field(default_factory=dict)

    def rows(self) -> list[list[object]]:
        out: list[list[object]] = []
        for d in MODES:
            ls = [x for x in self.lookups if x.paths == d]
            if not ls:
                continue
            dominated = sum(s > 0.5 for s in self.client_sybil_share) / max(1, len(self.client_sybil_share))
            out.append(
                [
                    self.n,
                    pct(self.fraction),
                    "yes" if self.churn else "no",
                    d,
                    len(ls),
                    pct(sum(x.ok for x in ls) / len(ls)),
                    f"{statistics.mean(x.rounds for x in ls):.2f}",
                    f"{statistics.mean(x.queries for x in ls):.1f}",
                    f"{statistics.mean(x.datagrams for x in ls):.1f}",
                    sum(x.forged for x in ls),
                    pct(sum(x.sybil_share > 0.5 for x in ls) / len(ls)),
                    pct(dominated),
                ]
            )
        return out


HEADERS = [
    "nodes",
    "sybil",
    "churn",
    "d",
    "lookups",
    "success",
    "hops",
    "queries",
    "datagrams",
    "forged refused",
    "result >50% sybil",
    "clients dominated",
]


def routing_sybil_share(client: DhtNode, sybil_ids: set[bytes]) -> float:
    assert client.protocol is not None
    contacts = [n for b in client.protocol.router.buckets for n in b.nodes.values()]
    return sum(n.id in sybil_ids for n in contacts) / len(contacts) if contacts else 1.0


def view_seeds(network: DhtNetwork, view: ReplicaIndex[int], key: bytes, k: int) -> list[Node]:
    return [network.nodes[c.item].contact for c in view.nearest(key, k)]


async def run_client(
    network: DhtNetwork,
    scenario: Scenario,
    rng: random.Random,
    lookups: int,
    used_ips: set[str],
    view: ReplicaIndex[int],
) -> None:
    net = network.net
    online = [i for i, n in enumerate(network.nodes) if n.address not in net.offline]
    honest_online = [i for i in online if i not in network.sybil]
    sybil_ids = {network.nodes[i].contact.id for i in network.sybil}
    client = DhtNode(None, clock=network.clock, ksize=network.nodes[0].dht.ksize)
    client.protocol = client._create_protocol()
    address = (random_ip(rng, used_ips), 40000)
    client.transport = net.attach(address, client.protocol)
    await client.bootstrap([network.nodes[i].address for i in rng.sample(online, 3)])
    scenario.client_sybil_share.append(routing_sybil_share(client, sybil_ids))
    ksize = client.ksize
    for _ in range(lookups):
        target = network.nodes[rng.choice(honest_online)].relay
        key = descriptor_key(target.fingerprint)
        for d in rng.sample(MODES, len(MODES)):  # random order: a lookup teaches the next one contacts
            before = net.sent[address]
            if d == "view":
                replicas = [
                    network.nodes[c.item].contact for c in view.replicas(key, day_of(network.clock()))
                ]
                result = await client.lookup_replicas(key, replicas)
            elif d == "4v":
                client.network_size = len(view)
                result = await client.lookup(
                    key, want_value=True, seeds=view_seeds(network, view, key, ksize)
                )
                client.network_size = 0
            else:
                dht_mod.DISJOINT_PATHS = int(d)  # read synchronously when the lookup starts
                result = await client.get_descriptor(target.fingerprint)
                dht_mod.DISJOINT_PATHS = 4
            found = result.descriptor is not None and result.descriptor.fingerprint == target.fingerprint
            share = sum(n.id in sybil_ids for n in result.nodes) / len(result.nodes) if result.nodes else 1.0
            scenario.lookups.append(
                Lookup(
                    d,
                    found,
                    max(result.rounds, default=0),
                    result.queries,
                    net.sent[address] - before,
                    result.forged,
                    share,
                )
            )
    scenario.rate_limited += client.protocol.stats["rate_limited"]
    client.stop()


async def crawl_once(network: DhtNetwork, rng: random.Random, used_ips: set[str]) -> dict[str, float]:
    """One fresh client's real discovery crawl (capped at 5,000 nodes and 60 s, onionmesh's defaults)."""
    net = network.net
    online = [i for i, n in enumerate(network.nodes) if n.address not in net.offline]
    client = DhtNode(None, clock=network.clock, ksize=network.nodes[0].dht.ksize)
    client.protocol = client._create_protocol()
    client.transport = net.attach((random_ip(rng, used_ips), 40000), client.protocol)
    await client.bootstrap([network.nodes[i].address for i in rng.sample(online, 3)])
    loop = asyncio.get_running_loop()
    start = loop.time()
    found = await client.crawl()
    took = loop.time() - start
    sybil_fps = {network.nodes[i].relay.fingerprint for i in network.sybil}
    client.stop()
    return {
        "online": len(online),
        "found": len(found),
        "seconds": took,
        "sybil_share": sum(d.fingerprint in sybil_fps for d in found) / max(1, len(found)),
        "sybil_online": len(network.sybil) / max(1, len(online)),
    }


async def study(
    n: int,
    fractions: list[float],
    clients: int,
    lookups: int,
    seed: int,
    model: SessionModel,
    churn_on: bool = True,
) -> tuple[list[Scenario], dict[str, float]]:
    t0 = time.perf_counter()
    net = MemoryNetwork(seed=seed)
    network = build_network(n, net, seed)
    perm = list(range(n))
    random.Random(seed + 2).shuffle(perm)
    always_on = set(perm[: int(max(fractions) * n)])  # Sybils never leave
    churn = Churn(net, model, seed + 3)
    if churn_on:
        churn.start([node.address for i, node in enumerate(network.nodes) if i not in always_on])
    online = {i for i, node in enumerate(network.nodes) if node.address not in net.offline}
    fill_routing_tables(network, seed + 4, online)
    place_descriptors(network, online)
    place_replicas(network, online)
    build = time.perf_counter() - t0
    await asyncio.sleep(WARMUP - VIEW_LAG)
    viewed = {i for i, node in enumerate(network.nodes) if node.address not in net.offline}
    view = replica_index(network, viewed)
    await asyncio.sleep(VIEW_LAG)
    scenarios = []
    rng = random.Random(seed + 5)
    used = {node.address[0] for node in network.nodes}
    for f in fractions:
        network.set_sybils(set(perm[: int(f * n)]))
        scenario = Scenario(n, f, churn=churn_on)
        await asyncio.gather(
            *(
                run_client(network, scenario, random.Random(rng.random()), lookups, used, view)
                for _ in range(clients)
            )
        )
        scenario.crawl = await crawl_once(network, random.Random(rng.random()), used)
        for node in network.nodes:
            scenario.rate_limited += node.protocol.stats.pop("rate_limited", 0)
        scenarios.append(scenario)
    churn.stop()
    info = {
        "build_s": build,
        "online_at_start": len(online) / n,
        "leaves": churn.leaves,
        "joins": churn.joins,
    }
    return scenarios, info


def plot(results: list[Scenario], path: str) -> None:
    import matplotlib.pyplot as plt

    from simulations.report import save as _save

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for n in sorted({s.n for s in results}):
        for churn in (True, False):
            sel = [s for s in results if s.n == n and s.churn == churn]
            if not sel:
                continue
            for d, style in (("view", "-o"), ("4v", "-^"), ("4", "-x"), ("1", "--s")):
                ys = [
                    100
                    * sum(x.ok for x in s.lookups if x.paths == d)
                    / max(1, sum(x.paths == d for x in s.lookups))
                    for s in sel
                ]
                ax1.plot(
                    [100 * s.fraction for s in sel],
                    ys,
                    style if churn else style[-1],
                    label=f"{n} nodes, d={d}{'' if churn else ', no churn'}",
                )
            if churn:
                ax2.plot(
                    [100 * s.fraction for s in sel],
                    [100 * statistics.mean(s.client_sybil_share) for s in sel],
                    "-o",
                    label=f"{n} nodes: Sybil share of a new client's routing table",
                )
                ax2.plot(
                    [100 * s.fraction for s in sel],
                    [100 * s.crawl["sybil_share"] for s in sel],
                    "--^",
                    label=f"{n} nodes: Sybil share of a crawled view",
                )
    ax1.scatter([20], [99], marker="*", s=150, color="k", zorder=5, label="S/Kademlia (10,000 nodes, d>1)")
    ax1.set(xlabel="Sybil nodes (%)", ylabel="lookup success (%)", title="Descriptor lookups under churn")
    ax1.set_ylim(0, 102)
    ax1.legend(fontsize=7)
    ax2.plot([0, 30], [0, 30], ":", color="grey", label="Sybil share of all nodes")
    sel = [s for s in results if s.churn and s.n == max(x.n for x in results)]
    ax2.plot(
        [100 * s.fraction for s in sel],
        [100 * s.crawl["sybil_online"] for s in sel],
        ":",
        color="k",
        label="Sybil share of online nodes (Sybils never leave)",
    )
    ax2.set(xlabel="Sybil nodes (%)", ylabel="Sybil share (%)", title="What a new client sees (with churn)")
    ax2.legend(fontsize=7)
    _save(fig, path)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m simulations.dht_discovery", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--quick", action="store_true", help="small network, few lookups (CI)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=None, help="directory for the PNG (default simulations/out)")
    ap.add_argument("--sizes", type=int, nargs="*", default=None)
    ap.add_argument("--median-session", type=float, default=2.0, help="hours")
    ap.add_argument("--fractions", type=float, nargs="*", default=None, help="Sybil shares with churn")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument(
        "--dir-view-only",
        action="store_true",
        help="only the directory-sources view (simulations.dir_view), not the DHT study",
    )
    args = ap.parse_args(argv)
    random.seed(args.seed)  # DhtNode.refresh_buckets draws from the global generator
    sizes = args.sizes or ([300] if args.quick else [1000, 10_000])
    fractions = args.fractions or ([0.0, 0.2] if args.quick else [0.0, 0.1, 0.2, 0.3])
    clients, lookups = (6, 5) if args.quick else (40, 25)
    model = SessionModel(median_session=args.median_session * 3600, median_gap=args.median_session * 3600)
    if args.dir_view_only:
        print_dir_view(sizes, [f for f in fractions if f > 0], args.seed, model, args.quick)
        return 0
    results: list[Scenario] = []
    runs = [(True, fractions)] if args.quick or args.fractions else [(True, fractions), (False, [0.2])]
    for n in sizes:
        for churn_on, fracs in runs:
            wall = time.perf_counter()
            (scenarios, info), virtual = vclock.run(
                lambda n=n, c=churn_on, f=fracs: study(n, f, clients, lookups, args.seed, model, c)
            )
            results += scenarios
            limited = sum(s.rate_limited for s in scenarios)
            print(
                f"# {n} nodes, churn {'on' if churn_on else 'off'}: built in {info['build_s']:.1f} s, "
                f"{pct(info['online_at_start'])} online at start, churn {info['leaves']:.0f} leaves / "
                f"{info['joins']:.0f} joins over {virtual / 60:.0f} virtual min, wall "
                f"{time.perf_counter() - wall:.1f} s, rate-limited requests {limited}",
                flush=True,
            )
    print(table(HEADERS, [row for s in results for row in s.rows()]))
    print()
    print(
        table(
            [
                "nodes",
                "sybil",
                "churn",
                "online nodes",
                "crawl found",
                "crawl virtual s",
                "Sybil share online",
                "Sybil share of view",
            ],
            [
                [
                    s.n,
                    pct(s.fraction),
                    "yes" if s.churn else "no",
                    int(s.crawl["online"]),
                    int(s.crawl["found"]),
                    f"{s.crawl['seconds']:.1f}",
                    pct(s.crawl["sybil_online"]),
                    pct(s.crawl["sybil_share"]),
                ]
                for s in results
            ],
        )
    )
    print()
    for line in metric_lines(results):
        print(line)
    print_dir_view(sizes, [f for f in fractions if f > 0], args.seed, model, args.quick)
    if not args.no_plot:
        path = out_path(args.out, "dht_discovery.png")
        plot(results, str(path))
        print(f"plot: {path}")
    return 0


def print_dir_view(
    sizes: list[int], fractions: list[float], seed: int, model: SessionModel, quick: bool
) -> None:
    """The view a fresh client gets from directory sources (simulations.dir_view), same churn:
    issue 19's sim.view_sybil_share_*, sim.online_sybil_share_* and sim.crawl_found_online_*."""
    for n in sizes:
        for f in fractions:
            res = dir_view.run(n, f, seed, model, clients=100 if quick else 300, real_clients=2)
            print(dir_view.summary(res), flush=True)
            for line in dir_view.metric_lines(res, f"{size_label(n)}_s{round(100 * f)}_churn"):
                print(line, flush=True)


def size_label(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def metric_lines(results: list[Scenario]) -> list[str]:
    """`name value unit` lines (issue 19's acceptance names): per scenario, view-seeded and
    iterative (view-seeded d = 4) lookup success and their messages per lookup."""
    out = []
    for s in results:
        tag = f"{size_label(s.n)}_s{round(100 * s.fraction)}_{'churn' if s.churn else 'nochurn'}"
        for mode, name in (("view", "lookup"), ("4v", "lookup_iterative"), ("4", "lookup_table_d4")):
            ls = [x for x in s.lookups if x.paths == mode]
            if not ls:
                continue
            out.append(f"sim.{name}_success_{tag} {sum(x.ok for x in ls) / len(ls):.4f} ratio")
            out.append(f"sim.{name}_queries_{tag} {statistics.mean(x.queries for x in ls):.2f} rpc")
            out.append(f"sim.{name}_datagrams_{tag} {statistics.mean(x.datagrams for x in ls):.2f} datagrams")
        if s.crawl and s.churn:  # the DHT crawl's view (the `--directory=crawl` client), for comparison
            out.append(f"sim.dht_crawl_view_sybil_share_{tag} {s.crawl['sybil_share']:.4f} ratio")
            out.append(
                f"sim.dht_crawl_found_online_{tag} {s.crawl['found'] / max(1, s.crawl['online']):.4f} ratio"
            )
    return out


if __name__ == "__main__":
    raise SystemExit(main())

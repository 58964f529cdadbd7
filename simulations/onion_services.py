"""Study 5: onion-service descriptors in the DHT at 10,000 relays, with churn and Sybils.

    python -m simulations.onion_services [--quick] [--seed N] [--out DIR]

Part 1 (availability, the real code): N relays, each a real `DhtNode` on `memnet` (as study 1),
honest nodes churning (`churn.py`). Onion services, each a real `DhtNode(None)`, build their
records with the real `hs_descriptor.build_record`, on the real `hs_publish.PublishSchedule`
(re-upload every 60-120 min), and store them with the real `DhtNode.publish_hs` (four replicas,
one lookup each). Clients look a service up at random times: for the current period they compute
the four `store_keys` and run the real `lookup(want_value=True)` replica by replica (random order)
until one answers with a record that passes every storing-node check. *Fresh*: a record of the
current period was found; *newest*: it was the newest revision the service had stored before the
lookup began.

Part 2 (placement, the real key schedule): which nodes hold one service's descriptor over a whole
period, onionmesh (`hs_placement.store_keys`: 4 replicas x the k = 16 XOR-closest online nodes)
against Tor's hash ring (rend-spec-v3 §2.2.3: 2 replicas x hsdir_spread_store = 4 successors of
`hs_index` on the ring of `hsdir_index`es, which mix in the shared random value). A random-placed
adversary holds a fraction of the nodes (it never goes offline; honest nodes churn); the
descriptor is re-uploaded every 90 minutes of the period. *Censored*: at every upload every holder
is the adversary's. *Tracked*: at every upload at least one holder is. Part 3 grinds real node
keys to sit next to one replica key, which onionmesh's predictable keys allow and Tor's shared
random value does not (a Tor HSDir needs days of uptime before the value is known).
See simulations/README.md for what is simplified.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import statistics
import time
from dataclasses import dataclass, field

import numpy as np

from onionmesh.crypto.hs_blinding import (
    PERIOD_LENGTH_MIN,
    ExpandedKey,
    blind_public,
    period_num,
    period_start,
)
from onionmesh.directory import hs_descriptor as hd
from onionmesh.directory.dht_records import node_id_for
from onionmesh.directory.hs_placement import REPLICAS, store_keys
from onionmesh.directory.hs_publish import PublishSchedule, Upload
from onionmesh.runtime.dht.node import DhtNode
from simulations import vclock
from simulations.churn import Churn, SessionModel
from simulations.dht_sim import DhtNetwork, build_network, fill_routing_tables, place_descriptors
from simulations.memnet import MemoryNetwork
from simulations.relays import EPOCH, PyRng, random_ip
from simulations.report import out_path, pct, table

WARMUP = 1800.0
CLIENT_SKEW = 15 * 60.0  # clients' clocks are off by up to this much, either way
BOUNDARY = period_start(period_num(EPOCH) + 1)  # the availability runs are centred on this one
K = 16
TOR_REPLICAS, TOR_SPREAD_STORE = 2, 4  # rend-spec-v3 hsdir_n_replicas, hsdir_spread_store
UPLOAD_EVERY = 90 * 60.0  # the middle of Tor's and onionmesh's 60-120 min


# ------------------------------------------------------------------------------- part 1


@dataclass
class Service:
    key: ExpandedKey
    node: DhtNode
    newest: dict[int, int] = field(default_factory=dict)  # period -> newest revision stored
    uploads: int = 0
    accepted: list[int] = field(default_factory=list)  # nodes that took each upload (4 replicas)

    @property
    def public(self) -> bytes:
        return self.key.public


@dataclass
class HsLookup:
    fresh: bool
    newest: bool
    replicas_tried: int
    datagrams: int
    from_boundary: float = 0.0  # seconds since the period boundary (negative: before it)


def _inner(rng: PyRng, network: DhtNetwork) -> hd.InnerDescriptor:
    relays = [network.nodes[rng.randbelow(len(network.nodes))].relay for _ in range(3)]
    points = tuple(
        hd.IntroPoint(
            r.identity.public,
            rng.random_bytes(32),
            ((r.ip, 9001),),
            rng.random_bytes(32),
            rng.random_bytes(32),
        )
        for r in relays
    )
    return hd.InnerDescriptor(points)


async def _join(
    network: DhtNetwork, rng: random.Random, used: set[str], skew: float = 0.0
) -> tuple[DhtNode, tuple[str, int]]:
    net = network.net
    online = [i for i, n in enumerate(network.nodes) if n.address not in net.offline]
    node = DhtNode(None, clock=lambda: network.clock() + skew, ksize=K)
    node.protocol = node._create_protocol()
    address = (random_ip(rng, used), 40000)
    node.transport = net.attach(address, node.protocol)
    await node.bootstrap([network.nodes[i].address for i in rng.sample(online, 3)])
    return node, address


async def run_service(network: DhtNetwork, service: Service, rng: PyRng, until: float) -> None:
    """The real publication schedule, the real record, the real four-replica store."""
    schedule = PublishSchedule(rng)
    inner = _inner(rng, network)
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        now = network.clock()
        for up in schedule.due(now):
            raw = hd.build_record(
                service.key, inner, period=up.period, revision=up.revision, valid_after=up.valid_after,
                lifetime_min=up.lifetime_min, rng=rng,
            )  # fmt: skip
            per_replica = await service.node.publish_hs(raw)
            service.uploads += 1
            service.accepted.append(sum(per_replica))
            schedule.uploaded(
                Upload(up.period, up.revision, up.valid_after), network.clock(), sum(per_replica) > 0
            )
            if sum(per_replica) > 0:
                service.newest[up.period] = max(service.newest.get(up.period, -1), up.revision)
        wake = schedule.next_wakeup(network.clock())
        await asyncio.sleep(max(1.0, min(wake - network.clock(), until - loop.time())))


async def run_client(
    network: DhtNetwork,
    services: list[Service],
    rng: random.Random,
    used: set[str],
    times: list[float],
    out: list[HsLookup],
) -> None:
    skew = rng.uniform(-CLIENT_SKEW, CLIENT_SKEW)  # this client's clock is off by this much
    client, address = await _join(network, rng, used, skew)
    loop = asyncio.get_running_loop()
    for at in sorted(times):
        await asyncio.sleep(max(0.0, at - loop.time()))
        service = rng.choice(services)
        now = network.clock() + skew
        period = period_num(int(now))
        expected = service.newest.get(period, -1)
        keys = list(store_keys(blind_public(service.public, period), period))
        rng.shuffle(keys)
        before = network.net.sent[address]
        record, tried = None, 0
        for key in keys:
            tried += 1
            result = await client.lookup(key, want_value=True)
            if result.hs_record is not None and result.hs_record.period == period:
                record = result.hs_record
                break
        out.append(
            HsLookup(
                record is not None,
                record is not None and record.revision >= expected,
                tried,
                network.net.sent[address] - before,
                network.clock() - BOUNDARY,
            )
        )
    client.stop()


async def availability(
    n: int,
    n_services: int,
    n_clients: int,
    lookups: int,
    hours: float,
    seed: int,
    model: SessionModel,
    sybil: float = 0.0,
) -> tuple[list[HsLookup], list[Service], dict[str, float]]:
    t0 = time.perf_counter()
    start = asyncio.get_running_loop().time()  # the window is centred on a period boundary
    net = MemoryNetwork(seed=seed)
    network = build_network(n, net, seed, published=int(EPOCH + start) - 600)
    perm = list(range(n))
    random.Random(seed + 2).shuffle(perm)
    network.set_sybils(set(perm[: round(sybil * n)]))  # study 1's Sybils: they drop stores, collude
    churn = Churn(net, model, seed + 3)
    churn.start([node.address for i, node in enumerate(network.nodes) if i not in network.sybil])
    online = {i for i, node in enumerate(network.nodes) if node.address not in net.offline}
    fill_routing_tables(network, seed + 4, online)
    place_descriptors(network, online)
    build = time.perf_counter() - t0
    rng = random.Random(seed + 5)
    used = {node.address[0] for node in network.nodes}
    until = start + hours * 3600.0
    services = []
    for i in range(n_services):
        node, _ = await _join(network, rng, used)
        services.append(Service(ExpandedKey.from_seed(PyRng(seed * 1000 + i).random_bytes(32)), node))
    tasks = [
        asyncio.ensure_future(run_service(network, s, PyRng(seed * 7 + i), until))
        for i, s in enumerate(services)
    ]
    await asyncio.sleep(WARMUP)
    out: list[HsLookup] = []
    await asyncio.gather(
        *(
            run_client(
                network, services, random.Random(rng.random()), used,
                [rng.uniform(start + WARMUP, until) for _ in range(lookups)], out,
            )
            for _ in range(n_clients)
        )
    )  # fmt: skip
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    churn.stop()
    for s in services:
        s.node.stop()
    info = {
        "build_s": build,
        "online_at_start": len(online) / n,
        "leaves": churn.leaves,
        "joins": churn.joins,
    }
    return out, services, info


# ------------------------------------------------------------------------------- part 2


def _top64(raw: bytes) -> int:
    return int.from_bytes(raw[:8], "big")


def tor_hs_index(blinded: bytes, replica: int, period: int) -> int:
    """rend-spec-v3 §2.2.3 hs_index(replica), replica = 1..hsdir_n_replicas."""
    return _top64(
        hashlib.sha3_256(
            b"store-at-idx" + blinded + replica.to_bytes(8, "big") + PERIOD_LENGTH_MIN.to_bytes(8, "big")
            + period.to_bytes(8, "big")
        ).digest()
    )  # fmt: skip


def tor_hsdir_index(identity: bytes, srv: bytes, period: int) -> int:
    """rend-spec-v3 §2.2.3: H("node-idx" | node_identity | srv | INT_8(period) | INT_8(length))."""
    return _top64(
        hashlib.sha3_256(
            b"node-idx" + identity + srv + period.to_bytes(8, "big") + PERIOD_LENGTH_MIN.to_bytes(8, "big")
        ).digest()
    )


def online_timelines(n: int, model: SessionModel, snapshots: int, rng: random.Random) -> np.ndarray:
    """online[s, i]: node i is up at upload s (uploads UPLOAD_EVERY apart), from a steady state."""
    out = np.zeros((snapshots, n), dtype=bool)
    p_on = model.online_fraction()
    for i in range(n):
        on = rng.random() < p_on
        t = -(model.session(rng) if on else model.gap(rng)) * rng.random()
        for s in range(snapshots):
            at = s * UPLOAD_EVERY
            while True:
                length = model.session(rng) if on else model.gap(rng)
                if t + length > at:
                    break
                t += length
                on = not on
            out[s, i] = on
    return out


@dataclass
class PlacementRow:
    fraction: float
    online_share: float
    om_censored: float
    om_tracked: float
    tor_censored: float
    tor_tracked: float


def placement(
    n: int, n_services: int, fractions: list[float], seed: int, model: SessionModel
) -> list[PlacementRow]:
    rng = random.Random(seed + 11)
    pks = [rng.randbytes(32) for _ in range(n)]
    om_ids = np.array([_top64(node_id_for(pk)) for pk in pks], dtype=np.uint64)
    snaps = int(86_400 // UPLOAD_EVERY)
    online = online_timelines(n, model, snaps, rng)
    perm = np.array(rng.sample(range(n), n))
    period = period_num(EPOCH)
    srv = rng.randbytes(32)  # the period's shared random value, unknown in advance
    tor_ids = np.array([tor_hsdir_index(pk, srv, period) for pk in pks], dtype=np.uint64)
    tor_order = np.argsort(tor_ids)
    # For each service: its onionmesh keys and Tor ring positions (the same blinded key for both).
    om_keys, tor_keys = [], []
    for _ in range(n_services):
        blinded = blind_public(ExpandedKey.from_seed(rng.randbytes(32)).public, period)
        om_keys.append([_top64(k) for k in store_keys(blinded, period)])
        tor_keys.append([tor_hs_index(blinded, r, period) for r in range(1, TOR_REPLICAS + 1)])
    rows = []
    for f in fractions:
        adversary = np.zeros(n, dtype=bool)
        adversary[perm[: round(f * n)]] = True
        up = online | adversary  # the adversary never leaves
        counts = {"om_c": 0, "om_t": 0, "tor_c": 0, "tor_t": 0}
        for s_keys, t_keys in zip(om_keys, tor_keys, strict=True):
            om_c = om_t = tor_c = tor_t = True
            for snap in range(snaps):
                live = np.flatnonzero(up[snap])
                holders_om: list[int] = []
                for key in s_keys:
                    dist = om_ids[live] ^ np.uint64(key)
                    holders_om += live[np.argpartition(dist, K)[:K]].tolist()
                holders_tor = _tor_responsible(tor_ids, tor_order, up[snap], t_keys)
                a_om = adversary[holders_om]
                a_tor = adversary[holders_tor]
                om_c &= bool(a_om.all())
                om_t &= bool(a_om.any())
                tor_c &= bool(a_tor.all())
                tor_t &= bool(a_tor.any())
            counts["om_c"] += om_c
            counts["om_t"] += om_t
            counts["tor_c"] += tor_c
            counts["tor_t"] += tor_t
        share_online = float(adversary.sum() / up.sum(axis=1).mean())
        rows.append(
            PlacementRow(
                f, share_online, *(counts[k] / n_services for k in ("om_c", "om_t", "tor_c", "tor_t"))
            )
        )
    return rows


def _tor_responsible(ids: np.ndarray, order: np.ndarray, up: np.ndarray, keys: list[int]) -> list[int]:
    """For each replica the next hsdir_spread_store online HSDirs on the ring, skipping ones chosen."""
    ring = order[up[order]]
    ring_ids = ids[ring]
    chosen: list[int] = []
    for key in keys:
        pos = int(np.searchsorted(ring_ids, np.uint64(key)))
        taken = 0
        while taken < TOR_SPREAD_STORE and taken + len(chosen) < len(ring):
            node = int(ring[pos % len(ring)])
            pos += 1
            if node in chosen:
                continue
            chosen.append(node)
            taken += 1
    return chosen


def threshold(xs: list[float], ys: list[float], level: float = 0.5) -> float | None:
    """The smallest x at which y reaches `level`, linearly interpolated."""
    for (x0, y0), (x1, y1) in zip(zip(xs, ys, strict=True), zip(xs[1:], ys[1:], strict=True), strict=False):
        if y0 < level <= y1:
            return x0 + (x1 - x0) * (level - y0) / (y1 - y0)
    return xs[0] if ys and ys[0] >= level else None


# ------------------------------------------------------------------------------- part 3


@dataclass
class Grind:
    attempts: int
    seconds: float
    holders_won: int


def grind_replica(n: int, seed: int) -> Grind:
    """Generate real node keys until K of them are closer to one replica key than every honest
    node of an n-node network; then check with the real XOR order that they are its K closest."""
    from nacl.signing import SigningKey

    rng = random.Random(seed + 21)
    honest = [int.from_bytes(node_id_for(rng.randbytes(32)), "big") for _ in range(n)]
    blinded = blind_public(ExpandedKey.from_seed(rng.randbytes(32)).public, period_num(EPOCH))
    key = int.from_bytes(store_keys(blinded, period_num(EPOCH))[0], "big")
    nearest_honest = min(h ^ key for h in honest)
    won: list[int] = []
    attempts = 0
    t0 = time.perf_counter()
    while len(won) < K:
        attempts += 1
        pk = bytes(SigningKey(os.urandom(32)).verify_key)
        nid = int.from_bytes(node_id_for(pk), "big")
        if nid ^ key < nearest_honest:
            won.append(nid)
    took = time.perf_counter() - t0
    closest = sorted(honest + won, key=lambda x: x ^ key)[:K]
    return Grind(attempts, took, sum(c in set(won) for c in closest))


# ------------------------------------------------------------------------------- report


def plot(
    results: list[tuple[int, float, list[HsLookup]]], rows: list[PlacementRow], n: int, path: str
) -> None:
    import matplotlib.pyplot as plt

    from simulations.report import save

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    labels = [f"{size}, {pct(f)} Sybil" for size, f, _ in results]
    fresh = [100 * sum(x.fresh for x in ls) / max(1, len(ls)) for _, _, ls in results]
    newest = [100 * sum(x.newest for x in ls) / max(1, len(ls)) for _, _, ls in results]
    xs = np.arange(len(labels))
    ax1.bar(xs - 0.2, fresh, 0.4, label="found a current-period descriptor")
    ax1.bar(xs + 0.2, newest, 0.4, label="found the newest revision")
    ax1.set_xticks(xs, labels, fontsize=7)
    ax1.set(ylabel="lookups (%)", title="Descriptor lookups under churn", ylim=(0, 105))
    ax1.legend(fontsize=7, loc="lower right")
    fx = [100 * r.fraction for r in rows]
    ax2.plot(fx, [100 * r.om_censored for r in rows], "-o", label="onionmesh: censored (4x16 holders)")
    ax2.plot(fx, [100 * r.tor_censored for r in rows], "--o", label="Tor ring: censored (2x4 HSDirs)")
    ax2.plot(fx, [100 * r.om_tracked for r in rows], "-s", label="onionmesh: tracked")
    ax2.plot(fx, [100 * r.tor_tracked for r in rows], "--s", label="Tor ring: tracked")
    ax2.set(
        xlabel="adversary share of all nodes (%), random IDs",
        ylabel="services for a whole period (%)",
        title=f"Random-placed adversary, {n} nodes, churn",
    )
    ax2.legend(fontsize=7)
    save(fig, path)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m simulations.onion_services", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--quick", action="store_true", help="small network, few lookups (CI)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=None, help="directory for the PNG (default simulations/out)")
    ap.add_argument("--median-session", type=float, default=2.0, help="hours")
    args = ap.parse_args(argv)
    random.seed(args.seed)  # DhtNode.refresh_buckets draws from the global generator
    model = SessionModel(median_session=args.median_session * 3600, median_gap=args.median_session * 3600)
    if args.quick:
        runs, n_services, n_clients, lookups, hours = [(300, 0.0), (300, 0.2)], 3, 6, 5, 3.0
        place_n, place_services = 1000, 30
        fractions = [0.05, 0.2, 0.5, 0.8, 0.95]
        grind_n = 300
    else:
        runs, n_services, n_clients, lookups, hours = (
            [(1000, 0.0), (10_000, 0.0), (10_000, 0.2)],
            10,
            30,
            10,
            8.0,
        )
        place_n, place_services = 10_000, 200
        fractions = [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99]
        grind_n = 10_000
    results = []
    table_rows = []
    for n, sybil in runs:
        wall = time.perf_counter()
        (lookups_done, services, info), virtual = vclock.run(
            lambda n=n, f=sybil: availability(n, n_services, n_clients, lookups, hours, args.seed, model, f),
            start=BOUNDARY - EPOCH - hours * 1800,
        )
        results.append((n, sybil, lookups_done))
        ls = lookups_done
        fresh = sum(x.fresh for x in ls) / len(ls)
        newest = sum(x.newest for x in ls) / len(ls)
        near = [x for x in ls if abs(x.from_boundary) <= 3600]  # the hour either side of the boundary
        fresh_near = sum(x.fresh for x in near) / len(near) if near else float("nan")
        uploads = sum(s.uploads for s in services)
        stored = statistics.mean(a for s in services for a in s.accepted)
        print(
            f"# {n} relays: built in {info['build_s']:.1f} s, {pct(info['online_at_start'])} online "
            f"at start, churn {info['leaves']:.0f} leaves / {info['joins']:.0f} joins over "
            f"{virtual / 3600:.1f} virtual h, "
            f"wall {time.perf_counter() - wall:.1f} s",
            flush=True,
        )
        table_rows.append(
            [
                n,
                pct(sybil), len(services), uploads, f"{stored:.1f}", len(ls), pct(fresh), pct(newest),
                f"{pct(fresh_near)} of {len(near)}",
                f"{statistics.mean(x.replicas_tried for x in ls):.2f}",
                f"{statistics.mean(x.datagrams for x in ls):.1f}",
            ]
        )  # fmt: skip
        tag = f"{n}" + (f"_sybil{round(100 * sybil)}" if sybil else "")
        print(f"hs_fresh_lookup_share_{tag} {fresh:.4f} ratio")
        print(f"hs_newest_lookup_share_{tag} {newest:.4f} ratio")
        print(f"hs_fresh_near_boundary_share_{tag} {fresh_near:.4f} ratio")
        print(f"hs_lookup_replicas_tried_{tag} {statistics.mean(x.replicas_tried for x in ls):.2f} replicas")
        print(f"hs_lookup_datagrams_{tag} {statistics.mean(x.datagrams for x in ls):.1f} datagrams")
    print(
        table(
            ["relays", "sybil", "services", "uploads", "nodes/upload", "lookups", "fresh", "newest",
             "fresh within 1 h of boundary", "replicas tried", "datagrams"],
            table_rows,
        )
    )  # fmt: skip
    print()
    wall = time.perf_counter()
    rows = placement(place_n, place_services, fractions, args.seed, model)
    print(
        f"# placement: {place_n} nodes, {place_services} services, 1 period, "
        f"wall {time.perf_counter() - wall:.1f} s"
    )
    print(
        table(
            ["adv share", "adv share online", "om censored", "om tracked", "tor censored", "tor tracked"],
            [
                [pct(x) for x in (r.fraction, r.online_share, r.om_censored, r.om_tracked, r.tor_censored)]
                + [pct(r.tor_tracked)]
                for r in rows
            ],
        )
    )  # fmt: skip
    print()
    fx = [r.fraction for r in rows]
    for name, ys in (
        ("om_censor", [r.om_censored for r in rows]),
        ("tor_censor", [r.tor_censored for r in rows]),
        ("om_track", [r.om_tracked for r in rows]),
        ("tor_track", [r.tor_tracked for r in rows]),
    ):
        x = threshold(fx, ys)
        print(f"hs_{name}_half_share {'nan' if x is None else f'{x:.4f}'} fraction_of_nodes")
    g = grind_replica(grind_n, args.seed)
    print(
        f"# grinding: {g.attempts} real keys for {K} IDs nearer one replica key than all {grind_n} "
        f"honest nodes, "
        f"{g.seconds:.1f} s on one core; they hold {g.holders_won} of its {K} closest"
    )
    print(f"hs_grind_ids_targeted {REPLICAS * K} nodes")
    print(f"hs_grind_share_targeted {REPLICAS * K / (grind_n + REPLICAS * K):.4f} fraction_of_nodes")
    print(f"hs_grind_keys_per_replica {g.attempts} keys")
    print(f"hs_grind_cpu_per_service_period {REPLICAS * g.seconds:.1f} s")
    print(f"hs_grind_holders_won {g.holders_won} of_{K}")
    path = out_path(args.out, "onion_services.png")
    plot(results, rows, place_n, str(path))
    print(f"plot: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

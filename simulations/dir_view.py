"""Study 8: the view a fresh client gets from directory sources, under churn and colluding Sybils.

    python -m simulations.dir_view [--quick] [--relays N] [--sybils F] [--seed N] [--median-session H]

`python -m simulations.dht_discovery` runs it too, for every size it studies with churn, and
prints its lines with the DHT study's (issue 19's acceptance names).

What is measured: a fresh client takes the states of 3 bootstrap contacts, drawn at random among
the online relays (as the DHT study's crawl bootstraps from 3 random online nodes), and its view
is their union (directory.dir_client): `sim.view_sybil_share_*` (Sybils among the view's RUNNING
relays), `sim.online_sybil_share_*` (Sybils among the relays online at that moment) and
`sim.crawl_found_online_*` (the share of the online relays RUNNING in the view: the name is the
crawl's, the view is now the directory's, docs/directory-design.md §8 stage 6).

Model of the relay-to-relay plane (docs/directory-design.md §4.1, runtime.relay.dir_source), in
5-minute ticks of virtual time; which source holds which relay's heartbeat for which epoch is a
bit matrix (numpy), the rules are the runtime's:
* churn: every honest relay alternates Weibull sessions and gaps (simulations.churn.SessionModel,
  the DHT study's model and medians, from a stationary start); Sybils never go offline.  A relay
  that comes back is a restarted process: its source state is empty (runtime.relay.dir_source
  keeps it in memory), it cuts at once if the epoch's cut-off has passed, and checks its liveness
  share at once;
* each epoch's start: every online honest source fetches the heartbeat of each online relay of
  its liveness share (directory.gossip_peers.liveness_share's rule: the 24 nearest node IDs,
  found with directory.placement.ReplicaIndex), and holds its own;
* every tick: every online honest source with a state pulls from its next gossip peer (4 placed
  at directory.gossip_peers' positions + 4 drawn by bandwidth, round robin): for the buckets
  whose hashes differ between the two cut states of its epoch, those chosen by
  directory.gossip_peers.gossip_buckets (the real function; at most 32 a round), it gets every
  heartbeat the peer holds for the current and previous epoch;
* at the cut-off (10 minutes in): RUNNING iff a heartbeat for E-1 or E is held
  (directory.source_state's rule);
* Sybils collude: as gossip peers and liveness checkers they pass on no honest heartbeat, as a
  client's contact their state lists every Sybil RUNNING and omits every honest relay; every
  honest source lists every Sybil RUNNING (pessimistic: they never leave and vouch for each
  other).
Simplified: descriptors are known to every source (they live 72 h and are gossiped and crawled;
only heartbeats are the short-lived evidence), no re-signing and no relays joining or leaving for
good within the run, one pull per tick at the tick.

Real code on the client side: for `--real-clients` of the clients, the contacts' states are real
`DirState`s of real signed descriptors, served as signed SNAPSHOT / HEAD / SUMMARY / BUCKET
documents (directory.dir_list) to the real `DirClient`, whose view must equal the bit-level union
(asserted); the figures are over all clients (`--clients` per measured epoch).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time
from dataclasses import dataclass, field

import numpy as np

from onionmesh.directory import dir_list as dl
from onionmesh.directory.dht_records import node_id_for
from onionmesh.directory.dir_client import CUTOFF, DirClient
from onionmesh.directory.dir_state import RUNNING, DirEntry, DirState
from onionmesh.directory.gossip_peers import (
    LIVENESS_SHARE,
    PLACED,
    RANDOM,
    _position,
    gossip_buckets,
    heartbeat_epochs,
)
from onionmesh.directory.placement import Candidate, ReplicaIndex
from onionmesh.runtime.relay.dir_source import GOSSIP_EVERY, MAX_BUCKETS_PER_ROUND
from simulations.churn import SessionModel
from simulations.relays import EPOCH, PyRng, Relay, make_relay, random_ip, tor_like_bandwidth

TICK = 300.0
EPOCH_LEN = 3600.0
TICKS = int(EPOCH_LEN // TICK)
CUT_TICK = round(CUTOFF * TICKS)  # 10 minutes in
FETCH_TICK = 6  # a client fetches 30 minutes into the epoch (the design's window is 15-45)
PULLS_PER_TICK = max(1, round(TICK / (EPOCH_LEN * GOSSIP_EVERY)))  # gossip rounds per tick
CONTACTS = 3  # a fresh client's bootstrap contacts (design §4.3)
T0 = (EPOCH // 3600 + 1) * 3600


@dataclass
class Result:
    n: int
    fraction: float
    view_sybil: list[float] = field(default_factory=list)
    online_sybil: list[float] = field(default_factory=list)
    found_online: list[float] = field(default_factory=list)
    ceiling: list[float] = field(default_factory=list)  # online now and at the epoch's start
    dead_in_view: list[float] = field(default_factory=list)
    source_found: list[float] = field(default_factory=list)  # one honest contact's share of online honest
    captured: int = 0  # clients whose every contact was a Sybil
    differing: list[int] = field(default_factory=list)  # buckets differing per pull
    real_checked: int = 0
    wall: float = 0.0


def timeline(model: SessionModel, r: random.Random, ticks: int) -> np.ndarray:
    """Online or not at each tick, from a stationary start (as simulations.churn.Churn)."""
    online = r.random() < model.online_fraction()
    left = (model.session(r) if online else model.gap(r)) * r.random()
    out = np.zeros(ticks, dtype=bool)
    t = 0.0
    for i in range(ticks):
        while left <= 0:
            online = not online
            left += model.session(r) if online else model.gap(r)
        out[i] = online
        t += TICK
        left -= TICK
    return out


class Layout:
    """Relays as bit columns, grouped by bucket (first fingerprint byte), each bucket byte-aligned."""

    def __init__(self, fps: list[bytes]) -> None:
        members: list[list[int]] = [[] for _ in range(256)]
        for i in sorted(range(len(fps)), key=lambda i: fps[i]):
            members[fps[i][0]].append(i)
        self.col = np.zeros(len(fps), dtype=np.int64)
        starts, byte_bucket = [], []
        at = 0
        for b in range(256):
            starts.append(at)
            for rank, i in enumerate(members[b]):
                self.col[i] = at * 8 + rank
            width = max(1, math.ceil(len(members[b]) / 8))
            byte_bucket += [b] * width
            at += width
        self.nbytes = at
        self.starts = np.array(starts)
        self.byte_bucket = np.array(byte_bucket)

    def mask(self, relays: np.ndarray) -> np.ndarray:
        bits = np.zeros(self.nbytes * 8, dtype=bool)
        bits[self.col[relays]] = True
        return np.packbits(bits)

    def set(self, arr: np.ndarray, rows: np.ndarray, relays: np.ndarray) -> None:
        cols = self.col[relays]
        np.bitwise_or.at(arr, (rows, cols // 8), (128 >> (cols % 8)).astype(np.uint8))

    def members(self, row: np.ndarray) -> np.ndarray:
        """Relay indices whose bit is set in one packed row."""
        return np.flatnonzero(np.unpackbits(row).astype(bool)[self.col])


def popcount(x: np.ndarray) -> np.ndarray:
    return np.unpackbits(x, axis=-1).sum(axis=-1)


def make_relays(n: int, seed: int) -> list[Relay]:
    r, rng, used = random.Random(seed), PyRng(seed), set()
    return [
        make_relay(rng, i, random_ip(r, used), capacity=tor_like_bandwidth(r), published=T0 - 60)
        for i in range(n)
    ]


def gossip_graph(
    relays: list[Relay], ids: list[bytes], index: ReplicaIndex[int], r: random.Random
) -> tuple[np.ndarray, np.ndarray]:
    """Each source's 8 gossip peers (4 placed, 4 by bandwidth) and its liveness share (24 nearest)."""
    n = len(relays)
    day = int(T0 // 86_400)
    weights = [x.descriptor.bandwidth for x in relays]
    total = np.cumsum(weights)
    peers = np.zeros((n, PLACED + RANDOM), dtype=np.int64)
    share = np.zeros((n, LIVENESS_SHARE), dtype=np.int64)
    for s in range(n):
        taken = {ids[s]}
        chosen: list[int] = []
        for i in range(PLACED):
            pos = _position(ids[s], day, i).to_bytes(20, "big")
            c = index.nearest(pos, 1, frozenset(taken))[0]
            taken.add(c.node_id)
            chosen.append(c.item)
        while len(chosen) < PLACED + RANDOM:
            pick = int(np.searchsorted(total, r.random() * total[-1], side="right"))
            if pick != s and pick not in chosen:
                chosen.append(pick)
        peers[s] = chosen
        share[s] = [c.item for c in index.nearest(ids[s], LIVENESS_SHARE, frozenset({ids[s]}))]
    return peers, share


def run(
    n: int,
    fraction: float,
    seed: int,
    model: SessionModel,
    *,
    warmup: int = 3,
    measured: int = 6,
    clients: int = 300,
    real_clients: int = 4,
    pulls_per_tick: int = PULLS_PER_TICK,
    contact_min_uptime: int = 0,
) -> Result:
    wall = time.perf_counter()
    res = Result(n, fraction)
    r = random.Random(seed)
    relays = make_relays(n, seed)
    fps = [bytes.fromhex(x.fingerprint) for x in relays]
    ids = [node_id_for(x.descriptor.identity_pk) for x in relays]
    index: ReplicaIndex[int] = ReplicaIndex((Candidate(ids[i], 0.0, i) for i in range(n)), 0.0, 0.0)
    peers, share = gossip_graph(relays, ids, index, r)
    perm = list(range(n))
    r.shuffle(perm)
    sybil = np.zeros(n, dtype=bool)
    sybil[perm[: int(fraction * n)]] = True
    honest = ~sybil
    ticks = (warmup + measured) * TICKS
    on = np.array([np.ones(ticks, dtype=bool) if sybil[i] else timeline(model, r, ticks) for i in range(n)]).T
    lay = Layout(fps)
    syb_mask = lay.mask(np.flatnonzero(sybil))
    hb = {-1: np.zeros((n, lay.nbytes), np.uint8), 0: np.zeros((n, lay.nbytes), np.uint8)}
    start_on = np.flatnonzero(on[0] & honest)  # a converged start: last epoch's heartbeats everywhere
    hb[-1][start_on] = lay.mask(start_on)
    cut = {e: np.zeros((n, lay.nbytes), np.uint8) for e in ("cur", "prev")}
    cut_epoch = np.full((n, 2), -99, dtype=np.int64)  # [cur, prev]
    turn = np.zeros(n, dtype=np.int64)
    grng = PyRng(seed + 7)
    cr = random.Random(seed + 9)

    def liveness(sources: np.ndarray, epoch: int, t: int) -> None:
        rows = np.repeat(sources, LIVENESS_SHARE)
        targets = share[sources].ravel()
        ok = on[t][targets] & honest[targets]
        lay.set(hb[epoch], rows[ok], targets[ok])
        lay.set(hb[epoch], sources, sources)

    def do_cut(sources: np.ndarray, epoch: int) -> None:
        cut["prev"][sources] = cut["cur"][sources]
        cut_epoch[sources, 1] = cut_epoch[sources, 0]
        cut["cur"][sources] = hb[epoch - 1][sources] | hb[epoch][sources] | syb_mask
        cut_epoch[sources, 0] = epoch

    for t in range(ticks):
        e, k = divmod(t, TICKS)
        now_on = on[t]
        if k == 0 and t:
            hb.pop(e - 2, None)
            hb[e] = np.zeros((n, lay.nbytes), np.uint8)
        live_honest = np.flatnonzero(now_on & honest)
        if t:  # restarted processes: state lost, cut at once after the cut-off, liveness at once
            back = np.flatnonzero(now_on & ~on[t - 1] & honest)
            for arr in (hb[e - 1], hb[e], cut["cur"], cut["prev"]):
                arr[back] = 0
            cut_epoch[back] = -99
            lay.set(hb[e], back, back)
            if k >= CUT_TICK:
                do_cut(back, e)
            liveness(back, e, t)
        if k == 0:
            liveness(live_honest, e, t)
        lay.set(hb[e], live_honest, live_honest)
        for _round in range(pulls_per_tick):
            # gossip: every online source pulls from the next of its peers that answers (online, with a
            # state of its epoch; a Sybil answers, with no honest heartbeat)
            before_cut = k < CUT_TICK
            pulled = heartbeat_epochs(e, before_cut)
            mine = np.where(cut_epoch[live_honest, 0] >= 0, cut_epoch[live_honest, 0], e - before_cut)
            p = np.full(len(live_honest), -1)
            tries = np.full(len(live_honest), PLACED + RANDOM)
            for step in range(PLACED + RANDOM):
                cand = peers[live_honest, (turn[live_honest] + step) % (PLACED + RANDOM)]
                answers = now_on[cand] & (sybil[cand] | (cut_epoch[cand] == mine[:, None]).any(axis=1))
                first = (p < 0) & answers
                p[first], tries[first] = cand[first], step + 1
            turn[live_honest] += tries
            ok = p >= 0
            ok[ok] = honest[p[ok]]
            s_ok, p_ok = live_honest[ok], p[ok]
            for epoch in pulled:  # heartbeats for every bucket that lacks some (at scale: every bucket)
                hb[epoch][s_ok] |= hb[epoch][p_ok]
            with_state = cut_epoch[s_ok, 0] >= 0
            s_ok, p_ok = s_ok[with_state], p_ok[with_state]
            if len(s_ok):
                theirs = np.where(
                    (cut_epoch[p_ok, 0] == cut_epoch[s_ok, 0])[:, None], cut["cur"][p_ok], cut["prev"][p_ok]
                )
                diff = np.bitwise_or.reduceat(cut["cur"][s_ok] ^ theirs, lay.starts, axis=1) != 0
                chosen = np.zeros_like(diff)
                for row in range(len(s_ok)):
                    differing = np.flatnonzero(diff[row]).tolist()
                    res.differing.append(len(differing))
                    chosen[row, gossip_buckets(differing, MAX_BUCKETS_PER_ROUND, grng)] = True
                fetch = np.where(chosen[:, lay.byte_bucket], np.uint8(255), np.uint8(0))
                for epoch in (e - 1, e):
                    if epoch not in pulled:
                        hb[epoch][s_ok] |= hb[epoch][p_ok] & fetch
        if k == CUT_TICK:
            do_cut(live_honest, e)
        if k == FETCH_TICK and e >= warmup:
            up = np.ones(n, dtype=bool)
            for back in range(1, contact_min_uptime + 1):
                up &= on[max(0, t - back)]
            measure(
                res, relays, lay, cut, cut_epoch, on, t, e, sybil, syb_mask, clients, real_clients, cr, up
            )
    res.wall = time.perf_counter() - wall
    return res


def measure(
    res: Result,
    relays: list[Relay],
    lay: Layout,
    cut: dict[str, np.ndarray],
    cut_epoch: np.ndarray,
    on: np.ndarray,
    t: int,
    e: int,
    sybil: np.ndarray,
    syb_mask: np.ndarray,
    clients: int,
    real_clients: int,
    r: random.Random,
    up: np.ndarray,
) -> None:
    """Fresh clients at tick t: 3 random online contacts (up long enough) serving this epoch's state."""
    online = on[t]
    online_mask = lay.mask(np.flatnonzero(online))
    at_start = lay.mask(np.flatnonzero(online & on[t - (t % TICKS)]))
    n_online = int(online.sum())
    honest_online = lay.mask(np.flatnonzero(online & ~sybil))
    n_honest_online = int((online & ~sybil).sum())
    servers = np.flatnonzero(online & up & (sybil | (cut_epoch[:, 0] == e))).tolist()
    for c in range(clients):
        contacts = r.sample(servers, CONTACTS)
        views = [syb_mask if sybil[s] else cut["cur"][s] for s in contacts]
        view = np.bitwise_or.reduce(np.array(views), axis=0)
        size = int(popcount(view))
        res.view_sybil.append(int(popcount(view & syb_mask)) / size)
        res.online_sybil.append(int(sybil.sum()) / n_online)
        res.found_online.append(int(popcount(view & online_mask)) / n_online)
        res.ceiling.append(int(popcount(at_start)) / n_online)
        res.dead_in_view.append(1 - int(popcount(view & online_mask)) / size)
        res.captured += all(sybil[s] for s in contacts)
        for s in contacts:
            if not sybil[s]:
                res.source_found.append(int(popcount(cut["cur"][s] & honest_online)) / n_honest_online)
        if c < real_clients:
            real_view(relays, lay, contacts, views, e, set(lay.members(view).tolist()))
            res.real_checked += 1


def real_view(
    relays: list[Relay], lay: Layout, contacts: list[int], views: list[np.ndarray], e: int, expect: set[int]
) -> None:
    """The same client with the real code: signed documents from each contact, DirClient's union."""
    epoch = int(T0 // EPOCH_LEN) + e
    now = epoch * EPOCH_LEN + FETCH_TICK * TICK
    states = []
    for row in views:
        entries = [DirEntry.of(relays[i].descriptor, RUNNING) for i in lay.members(row)]
        states.append(DirState(epoch, entries))
    client = DirClient(EPOCH_LEN)
    srcs = [relays[s] for s in contacts]
    keys = [x.descriptor.identity_pk for x in srcs]
    client.on_primary(keys[0], dl.make_snapshot(srcs[0].identity, states[0]).encode(), now)
    for src, key, state in zip(srcs[1:], keys[1:], states[1:], strict=True):
        if key == keys[0] or client.add_head(key, dl.make_head(src.identity, state).encode()):
            continue
        for b in client.add_summary(key, dl.make_summary(src.identity, state).encode()):
            client.add_bucket(key, dl.make_bucket(src.identity, state, b).encode(), now)
    client.finish()
    got = {d.fingerprint for d in client.view(now)}
    want = {relays[i].fingerprint for i in expect}
    assert got == want, f"DirClient's view differs from the model's: {len(got ^ want)} relays"


def metric_lines(res: Result, tag: str) -> list[str]:
    """`name value unit` lines: tag is e.g. 10k_s20_churn."""
    short = tag.split("_s")[0] + "_churn"
    return [
        f"sim.view_sybil_share_{tag} {statistics.mean(res.view_sybil):.4f} ratio",
        f"sim.online_sybil_share_{tag} {statistics.mean(res.online_sybil):.4f} ratio",
        f"sim.crawl_found_online_{short} {statistics.mean(res.found_online):.4f} ratio",
        f"sim.view_found_online_ceiling_{short} {statistics.mean(res.ceiling):.4f} ratio",
        f"sim.view_dead_share_{short} {statistics.mean(res.dead_in_view):.4f} ratio",
        f"sim.view_captured_clients_{tag} {res.captured / max(1, len(res.view_sybil)):.4f} ratio",
    ]


def summary(res: Result) -> str:
    q = statistics.quantiles(res.view_sybil, n=20) if len(res.view_sybil) > 1 else [0.0] * 19
    return (
        f"# dir_view: {res.n} relays, {res.fraction:.0%} Sybils, {len(res.view_sybil)} fresh clients "
        f"({res.real_checked} checked with the real DirClient), wall {res.wall:.0f} s; view Sybil share "
        f"median {statistics.median(res.view_sybil):.3f}, 95th pct {q[18]:.3f}; clients with only Sybil "
        f"contacts {res.captured}; an honest contact's state holds "
        f"{statistics.mean(res.source_found or [0]):.3f} of the online honest relays; buckets differing "
        f"per gossip pull: mean "
        f"{statistics.mean(res.differing or [0]):.0f} of 256"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m simulations.dir_view", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="500 relays, fewer clients (CI)")
    ap.add_argument("--relays", type=int, default=None)
    ap.add_argument("--sybils", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--median-session", type=float, default=2.0, help="hours (the DHT study's churn)")
    ap.add_argument("--clients", type=int, default=300, help="fresh clients per measured epoch")
    ap.add_argument("--real-clients", type=int, default=4, help="of those, checked with the real DirClient")
    ap.add_argument(
        "--gossip-per-tick",
        type=int,
        default=PULLS_PER_TICK,
        help="gossip rounds per 5 minutes (default: runtime.relay.dir_source's rate)",
    )
    ap.add_argument(
        "--contact-min-uptime", type=int, default=0, help="contacts serve only after this many 5-min ticks up"
    )
    args = ap.parse_args(argv)
    n = args.relays or (500 if args.quick else 10_000)
    model = SessionModel(median_session=args.median_session * 3600, median_gap=args.median_session * 3600)
    res = run(
        n,
        args.sybils,
        args.seed,
        model,
        clients=args.clients,
        real_clients=args.real_clients,
        pulls_per_tick=args.gossip_per_tick,
        contact_min_uptime=args.contact_min_uptime,
    )
    print(summary(res))
    tag = f"{n // 1000}k" if n % 1000 == 0 else str(n)
    for line in metric_lines(res, f"{tag}_s{round(100 * args.sybils)}_churn"):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

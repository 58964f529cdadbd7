"""A directory source's load: per-relay directory bytes and requests per second, from C clients.

    python -m simulations.dir_relay_load [--quick] [--relays N] [--clients C] [--seed N]

The real sans-I/O code on synthetic relays (simulations.dir_client_cost's relays and churn):
the documents a source serves at hour 25 (directory.dir_list.make_snapshot / make_diff /
make_head on directory.dir_state states), each source's limits (directory.dir_budget.DirBudget
at 10 % of its advertised bandwidth, 16 DIR_GETs per circuit per hour, one SNAPSHOT per 6 h), and
directory guards drawn by path_selection.bandwidth_weight from the RUNNING relays.

Model (docs/directory-design.md §7.2): each of C clients has 3 directory guards (weighted draw
without replacement; the /16, family and entry-guard exclusions of directory.dir_guards are left
out: they move no load between sources of a synthetic network); each hour it opens a one-hop
session to each (link handshake 212 B + CREATE/CREATED 8,192 B), asks its primary for the DIFF and
the two others for the HEAD (one 4,096-byte DIR_GET cell each), at a uniformly random second of
the hour; 1 % of clients start fresh each hour and ask their primary for the SNAPSHOT instead.
Answers cost whole cells of 4,070 document bytes.  Every request goes through its source's
DirBudget; an answer that does not fit is BUSY (one cell).  Not modelled: cross-check B (HEADs
through the DHT circuit's last hop, C·2·4,096/(N·3,600) B/s per relay, added in the printout),
SUMMARY/BUCKET fetches after a disagreement (none among honest sources), the relay-to-relay
gossip plane (§7.2: 1.2 KB/s per relay at 10,000 relays).

The load is linear in C (the guard draw does not depend on C and each client's requests are
independent), so the 2,000,000-client figures are the simulated ones times 2,000,000 / C; the
budget's BUSY share at 2 M is computed from that demand against each source's bucket rate.

Prints `name value unit` lines; the suffix is the relay count (10k) and the client count.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import random
import time

from onionmesh.crypto.keys import IdentityKey
from onionmesh.directory import dir_list as dl
from onionmesh.directory.dir_budget import DIR_SHARE, SNAPSHOT, DirBudget
from onionmesh.directory.path_selection import bandwidth_weight
from simulations.churn import SessionModel
from simulations.dir_client_cost import CELL, HOUR, cells, make_relays, state_at
from simulations.relays import PyRng

LINK_HANDSHAKE = 212
SESSION = LINK_HANDSHAKE + 2 * CELL  # a one-hop circuit's link handshake and CREATE/CREATED
FRESH_PER_HOUR = 0.01
TARGET_CLIENTS = 2_000_000
DIFF, HEAD = 2, 3


def pick3(r: random.Random, cum: list[int]) -> list[int]:
    """Three distinct indices, each drawn with probability proportional to its weight."""
    out: list[int] = []
    while len(out) < 3:
        i = bisect.bisect_right(cum, r.random() * cum[-1])
        if i not in out:
            out.append(i)
    return out


def run(n: int, clients: int, seed: int, model: SessionModel) -> dict[str, float]:
    rng = PyRng(seed + 1)
    relays = make_relays(n, model, seed)
    hour = 25  # steady state: a day of history
    old, new = state_at(hour - 1, relays, 24.0, rng), state_at(hour, relays, 24.0, rng)
    signer = IdentityKey.generate(rng)
    size = {
        SNAPSHOT: len(dl.make_snapshot(signer, new).encode()),
        DIFF: len(dl.make_diff(signer, old, new).encode()),
        HEAD: len(dl.make_head(signer, new).encode()),
    }
    sources = [e.descriptor for e in new.sorted_entries() if e.running]
    cum = list(itertools.accumulate(bandwidth_weight(d) for d in sources))
    budgets = [DirBudget(DIR_SHARE * d.bandwidth, now=0.0) for d in sources]
    demand = [0] * len(sources)  # answer bytes asked of each source (before BUSY)
    inbound = [0] * len(sources)  # bytes in and out of sessions and requests, BUSY answers included
    gets = [0] * len(sources)
    r = random.Random(seed + 3)
    requests = []
    for c in range(clients):
        guards = pick3(r, cum)
        first = SNAPSHOT if r.random() < FRESH_PER_HOUR else DIFF
        for g, kind in zip(guards, (first, HEAD, HEAD), strict=True):
            requests.append((r.random() * HOUR, g, c, kind))
    requests.sort()
    busy = 0
    for at, g, c, kind in requests:
        answer = cells(size[kind]) * CELL
        gets[g] += 1
        demand[g] += answer
        inbound[g] += SESSION + CELL
        if budgets[g].request(c, kind, at) and budgets[g].spend(answer, at):
            inbound[g] += answer
        else:
            busy += 1
            inbound[g] += CELL
    scale = TARGET_CLIENTS / clients
    busy_2m = sum(
        max(0.0, 1 - b.rate * HOUR / (scale * d)) * scale * d
        for b, d in zip(budgets, demand, strict=True)
        if d
    )
    per_s = [x / HOUR for x in inbound]
    ratio = [d / HOUR / b.rate for b, d in zip(budgets, demand, strict=True)]
    dht_b = clients * 2 * CELL / (n * HOUR)
    return {
        "sources": len(sources),
        "doc_snapshot": size[SNAPSHOT],
        "doc_diff": size[DIFF],
        "doc_head": size[HEAD],
        "bytes_s_mean": sum(per_s) / len(per_s) + dht_b,
        "bytes_s_max": max(per_s) + dht_b,
        "gets_s_mean": sum(gets) / len(gets) / HOUR + clients / (n * HOUR),
        "gets_s_max": max(gets) / HOUR + clients / (n * HOUR),
        "busy_share": busy / len(requests),
        "budget_share_max": max(ratio),
        "busy_share_2m": busy_2m / (scale * sum(demand)),
        "scale": scale,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m simulations.dir_relay_load", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--quick", action="store_true", help="1,000 relays and 10,000 clients (CI)")
    ap.add_argument("--relays", type=int, default=None)
    ap.add_argument("--clients", type=int, default=None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--median-session", type=float, default=2.0, help="hours (the DHT study's churn)")
    args = ap.parse_args(argv)
    n = args.relays or (1000 if args.quick else 10_000)
    c = args.clients or (10_000 if args.quick else 100_000)
    model = SessionModel(median_session=args.median_session * HOUR, median_gap=args.median_session * HOUR)
    wall = time.perf_counter()
    res = run(n, c, args.seed, model)
    tag = "10k" if n == 10_000 else str(n)
    ctag = f"{c // 1000}k" if c % 1000 == 0 else str(c)
    s = res["scale"]
    print(
        f"# {n} relays ({res['sources']:.0f} RUNNING sources), {c} clients, seed {args.seed}, "
        f"wall {time.perf_counter() - wall:.0f} s"
    )
    print(f"sim.dir_doc_snapshot_bytes_{tag} {res['doc_snapshot'] / 1000:.1f} KB")
    print(f"sim.dir_doc_diff_bytes_{tag} {res['doc_diff'] / 1000:.1f} KB")
    print(f"sim.dir_doc_head_bytes_{tag} {res['doc_head']:.0f} B")
    for label, k in ((ctag, 1.0), ("2m", s)):
        print(f"sim.dir_source_bytes_per_s_mean_{tag}_{label} {k * res['bytes_s_mean'] / 1000:.2f} KB/s")
        print(f"sim.dir_source_bytes_per_s_max_{tag}_{label} {k * res['bytes_s_max'] / 1000:.2f} KB/s")
        print(f"sim.dir_source_gets_per_s_mean_{tag}_{label} {k * res['gets_s_mean']:.3f} req/s")
        print(f"sim.dir_source_gets_per_s_max_{tag}_{label} {k * res['gets_s_max']:.3f} req/s")
        print(f"sim.dir_source_budget_share_max_{tag}_{label} {k * res['budget_share_max']:.4f} ratio")
    print(f"sim.dir_busy_share_{tag}_{ctag} {res['busy_share']:.4f} ratio")
    print(f"sim.dir_busy_share_{tag}_2m {res['busy_share_2m']:.4f} ratio")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

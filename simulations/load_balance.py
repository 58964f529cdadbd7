"""Study 3: relay utilisation against capacity under bandwidth-weighted selection, with liars.

    python -m simulations.load_balance [--quick] [--seed N] [--out DIR]

Real code under test: `directory.path_selection.select_path` (bandwidth-weighted, the 10 MB/s
cap on self-reported bandwidth, exit-first, /16 and family rules).  A synthetic 10,000-relay
directory: capacities log-normal (median 2 MB/s), honest relays advertise their capacity, 1 %
of relays (the liars, drawn among relays below 1 MB/s so that the cap does not hide the lie)
advertise 10x their capacity.  Demand: every circuit carries the same traffic, and the total
is set so that the network as a whole runs at `--load` of its capacity (each byte crosses 3
relays).  A relay's utilisation is the traffic its sampled circuits put on it over its capacity.
The same paths are drawn from the same directory with the liars telling the truth, to compare.
"""

from __future__ import annotations

import argparse
import itertools
import random
import time
from collections import Counter
from dataclasses import dataclass

from onionmesh.directory.path_selection import PathRequest, select_path
from simulations.measured_weights import as_hex, fluid_utilisation, fp_of, run_days
from simulations.relays import PyRng, Relay, make_relay, random_ip, tor_like_bandwidth
from simulations.report import out_path, pct, save, table

LIAR_FACTOR = 10


@dataclass
class Group:
    name: str
    fps: set[str]


def make_directory(n: int, liars: int, seed: int, lie: bool) -> tuple[list[Relay], set[str]]:
    """n relays; `liars` of the small ones (capacity < 1 MB/s) advertise LIAR_FACTOR x if `lie`."""
    pyr, keys, used = random.Random(seed), PyRng(seed), set[str]()
    caps = [tor_like_bandwidth(pyr) for _ in range(n)]
    exits = [pyr.random() < 0.2 for _ in range(n)]
    small = [i for i in range(n) if caps[i] < 1_000_000]
    liar_idx = set(pyr.sample(small, min(liars, len(small))))
    relays = [
        make_relay(
            keys,
            i,
            random_ip(pyr, used),
            capacity=caps[i],
            exit_relay=exits[i],
            dht_port=None,
            advertised=caps[i] * LIAR_FACTOR if (lie and i in liar_idx) else caps[i],
        )
        for i in range(n)
    ]
    return relays, {relays[i].fingerprint for i in liar_idx}


def utilisation(
    relays: list[Relay], paths: int, load: float, seed: int, weights: dict[str, int] | None = None
) -> tuple[dict[str, float], int]:
    """Per relay, traffic over capacity, from `paths` real select_path draws; and paths drawn.
    `weights`: measured weights (kB/s by fingerprint) for `PathRequest.weights`."""
    rng = PyRng(seed)
    descs = [r.descriptor for r in relays]
    hits: Counter[str] = Counter()
    for _ in range(paths):
        for d in select_path(descs, PathRequest(port=443, weights=weights), rng):
            hits[d.fingerprint] += 1
    total_capacity = sum(r.capacity for r in relays)
    per_path = load * total_capacity / (3 * paths)  # bytes/s each sampled path stands for
    return {r.fingerprint: hits[r.fingerprint] * per_path / r.capacity for r in relays}, paths


def group_util(relays: list[Relay], util: dict[str, float], fps: set[str]) -> float:
    """Traffic of the group over its capacity (a capacity-weighted mean of utilisations)."""
    members = [r for r in relays if r.fingerprint in fps]
    return sum(util[r.fingerprint] * r.capacity for r in members) / sum(r.capacity for r in members)


def groups(relays: list[Relay], liars: set[str]) -> list[Group]:
    cap = 10_000_000
    return [
        Group("all relays", {r.fingerprint for r in relays}),
        Group("exits", {r.fingerprint for r in relays if r.is_exit}),
        Group("non-exits", {r.fingerprint for r in relays if not r.is_exit}),
        Group("capacity > 10 MB/s (capped)", {r.fingerprint for r in relays if r.capacity > cap}),
        Group("liars (advertise 10x)", liars),
        Group("honest, < 1 MB/s", {r.fingerprint for r in relays if r.capacity < 1_000_000} - liars),
    ]


def binned(relays: list[Relay], util: dict[str, float], bins: list[float]) -> tuple[list[float], list[float]]:
    """Capacity-bin centres (MB/s) and each bin's utilisation (its traffic over its capacity).

    Per relay, sampled utilisation is lumpy (each sampled path stands for megabytes per second);
    summed over a bin it is not."""
    xs, ys = [], []
    for lo, hi in itertools.pairwise(bins):
        members = {r.fingerprint for r in relays if lo <= r.capacity < hi}
        if len(members) >= 20:
            xs.append((lo * hi) ** 0.5 / 1e6)
            ys.append(100 * group_util(relays, util, members))
    return xs, ys


def plot(runs: dict[bool, tuple[list[Relay], set[str], dict[str, float]]], path: str, load: float) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    bins = [50_000 * 1.6**i for i in range(20)]
    relays, liars, util = runs[True]
    for name, sel, style in (
        ("honest non-exits", [r for r in relays if not r.is_exit and r.fingerprint not in liars], "-o"),
        ("honest exits", [r for r in relays if r.is_exit and r.fingerprint not in liars], "-s"),
    ):
        ax.plot(*binned(sel, util, bins), style, ms=4, label=name)
    for lie, style in ((True, "r-x"), (False, "g--+")):
        relays, liars, util = runs[lie]
        ax.plot(
            *binned([r for r in relays if r.fingerprint in liars], util, bins[::2]),
            style,
            ms=8,
            label=f"the 1 % liars, {'advertising 10x' if lie else 'telling the truth'}",
        )
    ax.axhline(100 * load, color="grey", ls=":", label=f"network load {pct(load)}")
    ax.axhline(100, color="k", ls="--", lw=0.8, label="capacity")
    ax.axvline(10, color="grey", ls="-.", lw=0.8, label="10 MB/s weight cap")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(
        xlabel="relay capacity (MB/s, bins)",
        ylabel="utilisation of the bin (%)",
        title="Utilisation vs capacity, bandwidth-weighted selection (sampled paths)",
    )
    ax.legend(fontsize=7)
    save(fig, path)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m simulations.load_balance", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--quick", action="store_true", help="1,000 relays, fewer paths (CI)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=None)
    ap.add_argument("--relays", type=int, default=None)
    ap.add_argument("--paths", type=int, default=None)
    ap.add_argument("--load", type=float, default=0.5, help="network-wide load as a fraction of capacity")
    ap.add_argument("--days", type=int, default=4, help="days of measured weights (0: self-reports only)")
    ap.add_argument("--max-peers", type=int, default=512, help="peers per measurement report")
    args = ap.parse_args(argv)
    n = args.relays or (1000 if args.quick else 10_000)
    paths = args.paths or (600 if args.quick else 2500)
    wall = time.perf_counter()
    rows: list[list[object]] = []
    runs = {}
    metrics: list[str] = []
    variants: list[tuple[bool, bool]] = [(False, False), (True, False)]
    if args.days:
        variants.append((True, True))
    for lie, measure in variants:
        relays, liars = make_directory(n, max(5, n // 100), args.seed, lie)
        weights = None
        if measure:
            final, _ = run_days(relays, args.days, args.load, args.max_peers)
            weights = as_hex(final)
            fluid = fluid_utilisation(relays, final, args.load)
            honest_small = {r.fingerprint for r in relays if r.capacity < 1_000_000} - liars
            metrics.append(
                f"sim.load_liar_utilisation_measured_fluid {group_util(relays, fluid, liars):.4f} ratio"
            )
            small_u = group_util(relays, fluid, honest_small)
            metrics.append(f"sim.load_honest_small_utilisation_measured_fluid {small_u:.4f} ratio")
        elif lie:
            fluid = fluid_utilisation(
                relays, {fp_of(r): r.descriptor.bandwidth // 1000 for r in relays}, args.load
            )
            metrics.append(
                f"sim.load_liar_utilisation_selfreport_fluid {group_util(relays, fluid, liars):.4f} ratio"
            )
        util, drawn = utilisation(relays, paths, args.load, args.seed + 1, weights)
        total = sum(r.capacity for r in relays)
        for g in groups(relays, liars):
            capacity = sum(r.capacity for r in relays if r.fingerprint in g.fps)
            traffic = sum(util[r.fingerprint] * r.capacity for r in relays if r.fingerprint in g.fps)
            rows.append(
                [
                    ("yes" if lie else "no") + (f", measured {args.days} d" if measure else ""),
                    g.name,
                    len(g.fps),
                    pct(capacity / total),
                    pct(traffic / (args.load * total)),
                    pct(traffic / capacity),
                ]
            )
        if not measure:
            runs[lie] = (relays, liars, util)
        else:
            honest = {r.fingerprint for r in relays} - liars
            liar_u, honest_u = group_util(relays, util, liars), group_util(relays, util, honest)
            metrics.append(f"sim.load_liar_utilisation_measured {liar_u:.4f} ratio")
            metrics.append(f"sim.load_honest_utilisation_measured {honest_u:.4f} ratio")
        if lie and not measure:
            liar_u = group_util(relays, util, liars)
            metrics.append(f"sim.load_liar_utilisation_selfreport {liar_u:.4f} ratio")
        print(
            f"# liars {'lying' if lie else 'truthful'}{', measured weights' if measure else ''}: "
            f"{drawn} paths, {time.perf_counter() - wall:.0f} s",
            flush=True,
        )
    print(f"# {n} relays, network load {pct(args.load)} of capacity, wall {time.perf_counter() - wall:.1f} s")
    print(table(["liars lie", "group", "relays", "capacity share", "traffic share", "utilisation"], rows))
    print()
    for line in metrics:
        print(line)
    path = out_path(args.out, "load_balance.png")
    plot(runs, str(path), args.load)
    print(f"plot: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

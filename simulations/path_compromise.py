"""Study 2: path compromise (as TorPS does for Tor) over 30 simulated days at 10,000 relays.

    python -m simulations.path_compromise [--quick] [--seed N] [--out DIR]

Real code under test: `directory.path_selection.select_path` draws every path and
`directory.guards.GuardSet.primary` samples every client's guards; `directory.view.NetView`
applies the 5,000-relay cap a crawled view had when this study was run (now 20,000).
A circuit is compromised when the adversary holds both its hop 1 and its exit (end-to-end
correlation).  Each client's directory and guards
stay fixed over the 30 days (no relay churn; guards live 108-120 days), so its circuits are
independent draws from one distribution: the study draws a pool of real paths (one shared pool
without guards, a small pool per client whose primary guards include an adversary relay) and
assigns each circuit of the user model one draw of its pool.  A client whose primary guards are
all honest can never be compromised (hop 1 is always one of them; every drawn path is checked).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from dataclasses import dataclass, field

from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.directory.guards import GuardSet
from onionmesh.directory.path_selection import PathRequest, select_path
from onionmesh.directory.view import NetView
from simulations.consensus import make_population, weight_share
from simulations.relays import EPOCH, PyRng
from simulations.report import out_path, pct, save, table
from simulations.user_model import DAY, circuit_times, stream_times

VIEW_CAP = 5000  # NetView's max_relays and the crawl's max_nodes before the crawl fix (now 20,000)


@dataclass
class Outcome:
    share: float
    guards: bool
    view: str
    view_share: float = 0.0
    exit_share: float = 0.0
    circuits: int = 0
    bad_circuits: int = 0
    real_paths: int = 0
    first: list[float | None] = field(default_factory=list)  # days to first compromise, per client

    def by_day(self, day: float) -> float:
        return sum(1 for f in self.first if f is not None and f <= day) / len(self.first)


def capped_view(descs: list[RelayDescriptor], adversary: set[str]) -> list[RelayDescriptor]:
    """The view a capped crawl yields when the adversary's relays are met first (its DHT nodes
    answer FIND_NODE with each other): the real NetView keeps the first VIEW_CAP relays seen."""
    view = NetView(max_relays=VIEW_CAP)
    view.merge([d for d in descs if d.fingerprint in adversary], EPOCH)
    view.merge([d for d in descs if d.fingerprint not in adversary], EPOCH + 1, crawl=False)
    return view.relays(EPOCH + 2)


def compromised(path: list[RelayDescriptor], adversary: set[str]) -> bool:
    return path[0].fingerprint in adversary and path[-1].fingerprint in adversary


def run(
    descs: list[RelayDescriptor],
    adversary: set[str],
    guards: bool,
    view: str,
    schedules: list[list[float]],
    pool: int,
    per_client: int,
    seed: int,
    share: float,
) -> Outcome:
    rng, prng = random.Random(seed), PyRng(seed)
    out = Outcome(
        share,
        guards,
        view,
        weight_share(descs, adversary) if adversary else 0.0,
        weight_share(descs, adversary, exits_only=True) if adversary else 0.0,
    )
    shared: list[bool] = []
    if not guards:
        shared = [
            compromised(select_path(descs, PathRequest(port=443), prng), adversary) for _ in range(pool)
        ]
        out.real_paths += pool
    for c, circuits in enumerate(schedules):
        flags = shared
        if guards:
            gs = GuardSet(rng=PyRng(seed * 7919 + c))
            primary = gs.primary(EPOCH, descs)
            flags = [False]
            if any(fp in adversary for fp in primary):
                paths = [
                    select_path(descs, PathRequest(port=443, guards=tuple(primary)), prng)
                    for _ in range(per_client)
                ]
                out.real_paths += per_client
                if any(p[0].fingerprint not in primary for p in paths):
                    raise AssertionError("hop 1 outside the primary guards")
                flags = [compromised(p, adversary) for p in paths]
        first = None
        for t in circuits:
            bad = flags[rng.randrange(len(flags))]
            out.bad_circuits += bad
            if bad and first is None:
                first = t / DAY
        out.circuits += len(circuits)
        out.first.append(first)
    return out


HEADERS = [
    "adv weight (network)",
    "view",
    "adv weight (view)",
    "adv exit wt (view)",
    "guards",
    "clients",
    "circuits",
    "real paths",
    "circuits compromised",
    "clients by day 1",
    "by day 7",
    "by day 30",
    "median days to 1st",
]


def row(o: Outcome) -> list[object]:
    firsts = [f for f in o.first if f is not None]
    return [
        pct(o.share),
        o.view,
        pct(o.view_share),
        pct(o.exit_share),
        "yes" if o.guards else "no",
        len(o.first),
        o.circuits,
        o.real_paths,
        f"{100 * o.bad_circuits / max(1, o.circuits):.3f}%",
        pct(o.by_day(1)),
        pct(o.by_day(7)),
        pct(o.by_day(30)),
        f"{statistics.median(firsts):.2f}" if firsts else "-",
    ]


def plot(outcomes: list[Outcome], days: int, path: str) -> None:
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    grid = [d / 4 for d in range(4 * days + 1)]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    shares = sorted({o.share for o in outcomes if o.share > 0})
    for o in outcomes:
        if o.view != "full" or o.share == 0:
            continue
        c = colors[shares.index(o.share) % len(colors)]
        ax1.plot(
            grid,
            [100 * o.by_day(d) for d in grid],
            "-" if o.guards else "--",
            color=c,
            label=f"{pct(o.share)} adv, {'guards' if o.guards else 'no guards'}",
        )
    ax1.set(
        xlabel="days",
        ylabel="clients compromised at least once (%)",
        title="Clients with adversary at both ends (full view)",
    )
    ax1.legend(fontsize=7)
    for guards in (True, False):
        for view, style in (("full", "-o"), ("DHT cap", ":^")):
            sel = [o for o in outcomes if o.guards == guards and o.view == view]
            if sel:
                ax2.plot(
                    [100 * o.share for o in sel],
                    [100 * o.bad_circuits / max(1, o.circuits) for o in sel],
                    style,
                    label=f"{'guards' if guards else 'no guards'}, view: {view}",
                )
    ax2.set(
        xlabel="adversary share of selection weight in the network (%)",
        ylabel="circuits compromised (%)",
        title="Fraction of circuits compromised",
    )
    ax2.legend(fontsize=7)
    save(fig, path)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m simulations.path_compromise", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--quick", action="store_true", help="1,000 relays, few clients (CI)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=None)
    ap.add_argument("--relays", type=int, default=None)
    ap.add_argument("--clients", type=int, default=None)
    ap.add_argument("--days", type=int, default=30)
    args = ap.parse_args(argv)
    n = args.relays or (1000 if args.quick else 10_000)
    clients = args.clients or (60 if args.quick else 250)
    pool, per_client = (150, 4) if args.quick else (400, 4)
    shares = [0.0, 0.05, 0.3] if args.quick else [0.0, 0.05, 0.1, 0.2, 0.3]
    wall = time.perf_counter()
    population = make_population(n, n // 6, args.seed)
    schedules = [
        circuit_times(stream_times(random.Random(args.seed * 100_003 + c), args.days)) for c in range(clients)
    ]
    outcomes = []
    for share in shares:
        relays, adversary = population.directory(n, share)
        descs = [r.descriptor for r in relays]
        views = [("full", descs)]
        if share > 0 and n > VIEW_CAP:
            views.append(("DHT cap", capped_view(descs, adversary)))
        for view, directory in views:
            for guards in (False, True):
                outcomes.append(
                    run(
                        directory,
                        adversary,
                        guards,
                        view,
                        schedules,
                        pool,
                        per_client,
                        args.seed + int(share * 1000),
                        share,
                    )
                )
                print(
                    f"# {pct(share)} {view} guards={guards}: {time.perf_counter() - wall:.0f} s", flush=True
                )
    print(
        f"# {n} relays, {clients} clients x {args.days} days, "
        f"{statistics.mean(len(s) for s in schedules):.0f} circuits per client; "
        f"wall {time.perf_counter() - wall:.1f} s"
    )
    print(table(HEADERS, [row(o) for o in outcomes]))
    path = out_path(args.out, "path_compromise.png")
    plot(outcomes, args.days, str(path))
    print(f"plot: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

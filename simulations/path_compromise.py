"""Study 2: path compromise (as TorPS does for Tor) over 30 simulated days at 10,000 relays.

    python -m simulations.path_compromise [--quick] [--seed N] [--out DIR] [--johnson-days D]

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

The Johnson-style rows (`run_johnson`) compare with Johnson et al., CCS 2013: the adversary's
weight is split 5:1 between non-exit relays and exits, as theirs was between a guard and an exit,
over 180 days, so guards expire and are replaced (the real `GuardSet.primary`, called again when
a sampled guard expires).  Each circuit's exit is one draw of a shared pool of real unguarded
paths (the exit is drawn first, the same way with or without guards, except that guarded paths
skip the rare exits that conflict with all three guards); only when that exit is the
adversary's and so are some of the client's primary guards does the circuit's hop 1 matter, and
then it is the hop 1 of a real `select_path` with those guards and that exit (cached per guard
set and exit).  Unlike a small per-client pool of whole paths, this does not round a client's
rate of compromised circuits to a multiple of 1/pool.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.directory.guards import GuardSet
from onionmesh.directory.path_selection import PathRequest, select_path
from onionmesh.directory.view import NetView
from simulations.consensus import make_population, weight_share
from simulations.relays import EPOCH, PyRng
from simulations.report import out_path, pct, save, table
from simulations.user_model import DAY, circuit_times, stream_times

JOHNSON_GUARD_RATIO = 5.0  # their relay adversary: 100 MiB/s as 83.3 (guard) + 16.7 (exit)
JOHNSON_DAYS = 180  # their horizon: six months
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


@dataclass
class JohnsonOutcome:
    share: float
    guard_share: float = 0.0  # adversary share of all weight held by its non-exit relays
    exit_share: float = 0.0  # adversary share of exit weight
    circuits: int = 0
    bad_circuits: int = 0
    real_paths: int = 0
    first: list[float | None] = field(default_factory=list)  # days to first compromise, per client
    first_exit: list[float | None] = field(default_factory=list)  # days to first adversary exit
    first_guard: list[float | None] = field(default_factory=list)  # days to an adversary primary guard

    def by_day(self, day: float, firsts: list[float | None] | None = None) -> float:
        firsts = self.first if firsts is None else firsts
        return sum(1 for f in firsts if f is not None and f <= day) / len(firsts)


def guard_epochs(gs: GuardSet, descs: list[RelayDescriptor], days: float) -> list[tuple[float, list[str]]]:
    """(start second, primary guards) for each stretch of `days` over which the real
    `GuardSet.primary` stays the same: with a fixed directory it changes only when a sampled
    guard expires, so it is asked again at each expiry."""
    epochs: list[tuple[float, list[str]]] = []
    t = 0.0
    while t < days * DAY:
        epochs.append((t, gs.primary(EPOCH + t, descs)))
        t = min(g.expires_at for g in gs.sampled) - EPOCH
    return epochs


def run_johnson(
    descs: list[RelayDescriptor],
    adversary: set[str],
    schedules: list[list[float]],
    pool: int,
    days: float,
    seed: int,
    share: float,
) -> JohnsonOutcome:
    rng, prng = random.Random(seed), PyRng(seed)
    guard_fps = {d.fingerprint for d in descs if d.fingerprint in adversary and not d.is_exit}
    out = JohnsonOutcome(
        share, weight_share(descs, guard_fps), weight_share(descs, adversary, exits_only=True)
    )
    exits = [select_path(descs, PathRequest(port=443), prng)[-1].fingerprint for _ in range(pool)]
    out.real_paths += pool
    for c, circuits in enumerate(schedules):
        epochs = guard_epochs(GuardSet(rng=PyRng(seed * 7919 + c)), descs, days)
        hop1: dict[tuple[int, str], str] = {}
        first = first_exit = first_guard = None
        e = 0
        for start, primary in epochs:
            if first_guard is None and any(fp in adversary for fp in primary):
                first_guard = start / DAY
        for t in circuits:
            while e + 1 < len(epochs) and epochs[e + 1][0] <= t:
                e += 1
            primary = epochs[e][1]
            exit_fp = exits[rng.randrange(pool)]
            if exit_fp not in adversary:
                continue
            if first_exit is None:
                first_exit = t / DAY
            if not any(fp in adversary for fp in primary):
                continue
            if (e, exit_fp) not in hop1:
                req = PathRequest(port=443, guards=tuple(primary), exit_fp=exit_fp)
                path = select_path(descs, req, prng)
                if path[0].fingerprint not in primary:
                    raise AssertionError("hop 1 outside the primary guards")
                hop1[(e, exit_fp)] = path[0].fingerprint
                out.real_paths += 1
            if hop1[(e, exit_fp)] in adversary:
                out.bad_circuits += 1
                if first is None:
                    first = t / DAY
        out.circuits += len(circuits)
        out.first.append(first)
        out.first_exit.append(first_exit)
        out.first_guard.append(first_guard)
    return out


def johnson_study(n: int, clients: int, seed: int, days: int, quick: bool) -> list[JohnsonOutcome]:
    """The Johnson-style rows on their own directory (the same relays as the main study's)."""
    population = make_population(n, n // 6, seed)
    schedules = [circuit_times(stream_times(random.Random(seed * 100_003 + c), days)) for c in range(clients)]
    pool = 200 if quick else 1000  # shared real paths whose exits the circuits draw
    outcomes = []
    for share in [0.1] if quick else [0.05, 0.1]:
        relays, adversary = population.split_directory(n, share, JOHNSON_GUARD_RATIO)
        descs = [r.descriptor for r in relays]
        outcomes.append(run_johnson(descs, adversary, schedules, pool, days, seed + int(share * 1000), share))
    return outcomes


JOHNSON_HEADERS = [
    "johnson adv weight",
    "non-exit : exit",
    "adv exit wt",
    "clients",
    "circuits",
    "real paths",
    "circuits compromised",
    "clients by day 1",
    "by day 7",
    "by day 30",
    "by day 90",
    "by day 180",
    "median days to 1st (all clients)",
    "adv exit by day 1",
    "adv primary guard by day 180",
]


def _median(firsts: list[float | None], days: float) -> str:
    """Median over all clients (never compromised counts as later than the horizon)."""
    m = statistics.median_low([f if f is not None else math.inf for f in firsts])
    return f"{m:.2f}" if m != math.inf else f"> {days:g}"


def johnson_row(o: JohnsonOutcome, days: float) -> list[object]:
    return [
        pct(o.share),
        f"{pct(o.guard_share)} : {pct(o.share - o.guard_share)}",
        pct(o.exit_share),
        len(o.first),
        o.circuits,
        o.real_paths,
        f"{100 * o.bad_circuits / max(1, o.circuits):.3f}%",
        *(pct(o.by_day(d)) if d <= days else "-" for d in (1, 7, 30, 90, 180)),
        _median(o.first, days),
        pct(o.by_day(1, o.first_exit)),
        pct(o.by_day(180, o.first_guard)) if days >= 180 else "-",
    ]


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


def plot(outcomes: list[Outcome], johnson: list[JohnsonOutcome], days: int, jdays: int, path: str) -> None:
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 4.2))
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
    jgrid = [d / 4 for d in range(4 * jdays + 1)]
    for o in johnson:
        ax3.plot(jgrid, [100 * o.by_day(d) for d in jgrid], label=f"onionmesh, {pct(o.share)} adv, 5:1")
    ax3.plot([180], [80], "k^", label="Johnson et al.: >80 % by 6 months (100 MiB/s, Tor 2013)")
    ax3.plot([30], [50], "kv", label="Johnson et al.: 50 % by 30 days (200 MiB/s)")
    ax3.set(
        xlabel="days",
        ylabel="clients compromised at least once (%)",
        title="Johnson-style adversary (5:1), guards, 180 days",
        ylim=(0, 100),
    )
    ax3.legend(fontsize=7)
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
    ap.add_argument(
        "--johnson-days", type=int, default=None, help="horizon of the Johnson-style rows (180; 0: skip)"
    )
    args = ap.parse_args(argv)
    n = args.relays or (1000 if args.quick else 10_000)
    clients = args.clients or (60 if args.quick else 250)
    pool, per_client = (150, 4) if args.quick else (400, 4)
    jdays = JOHNSON_DAYS if args.johnson_days is None else args.johnson_days
    johnson: list[JohnsonOutcome] = []
    johnson_job, pool_exec = None, None
    if jdays > 0 and not args.quick:  # the second core runs the Johnson rows meanwhile
        pool_exec = ProcessPoolExecutor(max_workers=1)
        johnson_job = pool_exec.submit(johnson_study, n, clients, args.seed, jdays, args.quick)
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
    if johnson_job is not None and pool_exec is not None:
        johnson = johnson_job.result()
        pool_exec.shutdown()
    elif jdays > 0:
        johnson = johnson_study(n, clients, args.seed, jdays, args.quick)
    if jdays > 0:
        print(
            f"\n# Johnson-style: {n} relays, {clients} clients x {jdays} days, "
            f"{johnson[0].circuits / clients:.0f} circuits per client, guards"
        )
        print(table(JOHNSON_HEADERS, [johnson_row(o, jdays) for o in johnson]))
    print(f"# wall {time.perf_counter() - wall:.1f} s")
    path = out_path(args.out, "path_compromise.png")
    plot(outcomes, johnson, args.days, jdays, str(path))
    print(f"plot: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

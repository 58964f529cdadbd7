"""Study 2: path compromise (as TorPS does for Tor) over 30 simulated days at 10,000 relays.

    python -m simulations.path_compromise [--quick] [--seed N] [--out DIR] [--johnson-days D] [--jobs J]

Real code under test: `directory.path_selection.select_path` draws every path and
`directory.guards.GuardSet.primary` samples every client's guards; `directory.view.NetView`
applies the 5,000-relay cap a crawled view had when this study was run (now 20,000).
A circuit is compromised when the adversary holds both its hop 1 and its exit (end-to-end
correlation).  With a fixed directory (no relay churn) a client's circuits are independent draws
from one distribution, so every circuit is one draw of a shared pool of real paths
(`SharedPaths`: SHARED_PATHS unguarded `select_path` paths per directory):

* without guards, the circuit is that whole path;
* with guards, the circuit takes that path's exit (`select_path` draws the exit first, the same
  way with or without guards, except that with guards it never draws an exit that conflicts with
  every primary guard: such a draw is drawn again) and its hop 1 is the hop 1 of a real
  `select_path` with the client's primary guards and that exit.  That hop 1 depends on the exit
  only through which of the guards it conflicts with (the real `relays_conflict`: same relay,
  family, /16): `select_path` takes the first primary guard that does not conflict with the exit
  (the middle always has room at these sizes), so one call per client, guard epoch and conflict
  pattern serves all its circuits (tests/simulations/test_quick.py checks the cache against
  direct calls).  Only circuits with an adversary exit and a client with an adversary primary
  guard need it.

Every circuit of every client thus gets its own exit draw, so a client whose hop-1 guard is the
adversary's is compromised at its first circuit with an adversary exit, as it would be.  Guards
are the real `GuardSet.primary`, asked again whenever a sampled guard expires (108-120 days; so
never in the 30-day rows, once per client in the 180-day ones).

The Johnson-style rows (`run_johnson`) compare with Johnson et al., CCS 2013: the adversary's
weight is split 5:1 between non-exit relays and exits, as theirs was between a guard and an exit,
over 180 days, with guards, on the same `SharedPaths`.
"""

from __future__ import annotations

import argparse
import functools
import math
import random
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field

from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.directory.guards import GuardSet
from onionmesh.directory.path_selection import PathRequest, relays_conflict, select_path
from onionmesh.directory.view import NetView
from simulations.consensus import Population, make_population, weight_share
from simulations.overclaim import measured_directory, overclaim_directory
from simulations.relays import EPOCH, PyRng
from simulations.report import out_path, pct, save, table
from simulations.user_model import DAY, circuit_times, stream_times

JOHNSON_GUARD_RATIO = 5.0  # their relay adversary: 100 MiB/s as 83.3 (guard) + 16.7 (exit)
JOHNSON_DAYS = 180  # their horizon: six months
SHARED_PATHS = 1000  # real select_path paths per directory that every circuit draws from
QUICK_SHARED_PATHS = 200
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
    adv_first_guard: int = 0  # clients whose first primary guard is the adversary's (with guards)

    def by_day(self, day: float) -> float:
        return sum(1 for f in self.first if f is not None and f <= day) / len(self.first)


def capped_view(descs: list[RelayDescriptor], adversary: set[str]) -> list[RelayDescriptor]:
    """The view a capped crawl yields when the adversary's relays are met first (its DHT nodes
    answer FIND_NODE with each other): the real NetView keeps the first VIEW_CAP relays seen."""
    view = NetView(max_relays=VIEW_CAP)
    view.merge([d for d in descs if d.fingerprint in adversary], EPOCH)
    view.merge([d for d in descs if d.fingerprint not in adversary], EPOCH + 1, crawl=False)
    return view.relays(EPOCH + 2)


@dataclass
class ClientRun:
    """One client's circuits over its schedule."""

    bad: int = 0  # compromised circuits
    first: float | None = None  # days to the first compromised circuit
    first_exit: float | None = None  # days to the first circuit with an adversary exit


class SharedPaths:
    """`size` real unguarded `select_path` paths on one directory, which every circuit of every
    client draws from (see the module docstring), and the hop 1 of guarded circuits."""

    def __init__(self, descs: list[RelayDescriptor], adversary: set[str], size: int, prng: PyRng) -> None:
        self.descs, self.adversary, self.prng = descs, adversary, prng
        self.by_fp = {d.fingerprint: d for d in descs}
        self.paths = [
            (p[0].fingerprint, p[-1].fingerprint)
            for p in (select_path(descs, PathRequest(port=443), prng) for _ in range(size))
        ]
        self.real_paths = size  # select_path calls: the pool, then the guarded hop-1 calls
        self._hop1: dict[tuple[tuple[str, ...], tuple[bool, ...]], str] = {}

    def conflicts(self, primary: tuple[str, ...], exit_fp: str) -> tuple[bool, ...]:
        """Which primary guards may not share a circuit with this exit (the real rule)."""
        exit_desc = self.by_fp[exit_fp]
        return tuple(relays_conflict(self.by_fp[g], exit_desc) for g in primary)

    def hop1(self, primary: tuple[str, ...], exit_fp: str, conflicts: tuple[bool, ...]) -> str:
        """Hop 1 of the real `select_path` with these guards and this exit, cached by what it
        depends on: the guards and which of them conflict with the exit."""
        key = (primary, conflicts)
        if key not in self._hop1:
            req = PathRequest(port=443, guards=primary, exit_fp=exit_fp)
            path = select_path(self.descs, req, self.prng)
            if path[0].fingerprint not in primary or path[-1].fingerprint != exit_fp:
                raise AssertionError("hop 1 outside the primary guards, or another exit")
            self._hop1[key] = path[0].fingerprint
            self.real_paths += 1
        return self._hop1[key]

    def client(
        self, circuits: list[float], rng: random.Random, epochs: list[tuple[float, list[str]]] | None
    ) -> ClientRun:
        """Each circuit (build time in seconds) draws one shared path: the whole path without
        guards (`epochs` None); with guards (the client's primary guards from each start time
        on) its exit, and hop 1 from the real `select_path` with those guards and that exit."""
        out, e, adversary = ClientRun(), 0, self.adversary
        for t in circuits:
            hop1, exit_fp = self.paths[rng.randrange(len(self.paths))]
            if epochs is not None:
                while e + 1 < len(epochs) and epochs[e + 1][0] <= t:
                    e += 1
                primary = tuple(epochs[e][1])
                conflicts = self.conflicts(primary, exit_fp)
                while all(conflicts):  # select_path with these guards never draws this exit
                    exit_fp = self.paths[rng.randrange(len(self.paths))][1]
                    conflicts = self.conflicts(primary, exit_fp)
            if exit_fp not in adversary:
                continue
            if out.first_exit is None:
                out.first_exit = t / DAY
            if epochs is not None:  # hop 1 is a primary guard: the adversary's only if one is
                if not any(fp in adversary for fp in primary):
                    continue
                hop1 = self.hop1(primary, exit_fp, conflicts)
            if hop1 in adversary:
                out.bad += 1
                if out.first is None:
                    out.first = t / DAY
        return out


def run(
    descs: list[RelayDescriptor],
    adversary: set[str],
    view: str,
    schedules: list[list[float]],
    pool: int,
    days: float,
    seed: int,
    share: float,
) -> list[Outcome]:
    """The rows without and with guards on one directory, from one `SharedPaths`."""
    paths = SharedPaths(descs, adversary, pool, PyRng(seed))
    view_share = weight_share(descs, adversary) if adversary else 0.0
    exit_share = weight_share(descs, adversary, exits_only=True) if adversary else 0.0
    outcomes = []
    for guards in (False, True):
        out = Outcome(share, guards, view, view_share, exit_share)
        rng = random.Random(seed)  # the same circuit draws with and without guards
        for c, circuits in enumerate(schedules):
            epochs = guard_epochs(GuardSet(rng=PyRng(seed * 7919 + c)), descs, days) if guards else None
            client = paths.client(circuits, rng, epochs)
            out.bad_circuits += client.bad
            out.circuits += len(circuits)
            out.first.append(client.first)
            out.adv_first_guard += epochs is not None and epochs[0][1][0] in adversary
        out.real_paths = paths.real_paths
        outcomes.append(out)
    return outcomes


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
    paths = SharedPaths(descs, adversary, pool, prng)
    for c, circuits in enumerate(schedules):
        epochs = guard_epochs(GuardSet(rng=PyRng(seed * 7919 + c)), descs, days)
        client = paths.client(circuits, rng, epochs)
        out.bad_circuits += client.bad
        out.circuits += len(circuits)
        out.first.append(client.first)
        out.first_exit.append(client.first_exit)
        out.first_guard.append(
            next((start / DAY for start, primary in epochs if any(fp in adversary for fp in primary)), None)
        )
    out.real_paths = paths.real_paths
    return out


@functools.lru_cache(maxsize=1)
def _population(n: int, seed: int) -> Population:
    return make_population(n, n // 6, seed)


@functools.lru_cache(maxsize=2)
def _schedules(clients: int, seed: int, days: int) -> list[list[float]]:
    return [circuit_times(stream_times(random.Random(seed * 100_003 + c), days)) for c in range(clients)]


def directory_rows(
    n: int, clients: int, seed: int, days: int, share: float, view: str, pool: int
) -> list[Outcome]:
    """The rows without and with guards for one adversary share and view (one job)."""
    if view.startswith("over-claim"):  # the adversary advertises 10x its capacity (simulations/overclaim.py)
        relays, adversary = overclaim_directory(_population(n, seed), n, share, seed)
        if view == "over-claim, measured":
            relays = measured_directory(relays, adversary, seed)
            adversary = {r.fingerprint for r in relays if r.adversary}
    else:
        relays, adversary = _population(n, seed).directory(n, share)
    descs = [r.descriptor for r in relays]
    if view == "DHT cap":
        descs = capped_view(descs, adversary)
    schedules = _schedules(clients, seed, days)
    return run(descs, adversary, view, schedules, pool, days, seed + int(share * 1000), share)


def johnson_row_job(n: int, clients: int, seed: int, days: int, share: float, pool: int) -> JohnsonOutcome:
    """One Johnson-style row, on its own directory (the same honest relays as the main study's)."""
    relays, adversary = _population(n, seed).split_directory(n, share, JOHNSON_GUARD_RATIO)
    descs = [r.descriptor for r in relays]
    schedules = _schedules(clients, seed, days)
    return run_johnson(descs, adversary, schedules, pool, days, seed + int(share * 1000), share)


# Columns both tables share, in this order.
COUNT_HEADERS = [
    "clients",
    "circuits",
    "real paths",
    "circuits compromised",
    "clients by day 1",
    "by day 7",
    "by day 30",
]
JOHNSON_HEADERS = [
    "johnson adv weight",
    "non-exit : exit",
    "adv exit wt",
    *COUNT_HEADERS,
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
    *COUNT_HEADERS,
    "median days to 1st",
    "adv 1st guard",
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
        pct(o.adv_first_guard / len(o.first)) if o.guards else "-",
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


def compromise_lines(outcomes: list[Outcome], days: int) -> list[str]:
    """`name value unit` lines: clients compromised by `days` with guards, per share and view, and
    each view's figure relative to the full (perfect static) directory's at the same share."""
    out = []
    full = {o.share: o.by_day(days) for o in outcomes if o.guards and o.view == "full"}
    for o in outcomes:
        if not o.guards or o.share == 0:
            continue
        slug = o.view.replace(", ", "_").replace(" ", "_").replace("-", "")
        value = o.by_day(days)
        out.append(f"sim.compromised_{days}d_guards_s{round(100 * o.share)}_{slug} {value:.4f} ratio")
        out.append(f"sim.adversary_weight_share_s{round(100 * o.share)}_{slug} {o.view_share:.4f} ratio")
        if o.view != "full" and full.get(o.share):
            out.append(
                f"sim.compromised_vs_perfect_s{round(100 * o.share)}_{slug} {value / full[o.share]:.3f} ratio"
            )
    return out


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
    ap.add_argument("--jobs", type=int, default=None, help="worker processes (2; --quick: 1, in-process)")
    ap.add_argument(
        "--overclaim",
        action="store_true",
        help="only the over-claiming adversary rows (5-20 %%: perfect, self-reported, measured weights)",
    )
    args = ap.parse_args(argv)
    n = args.relays or (1000 if args.quick else 10_000)
    clients = args.clients or (60 if args.quick else 250)
    pool = QUICK_SHARED_PATHS if args.quick else SHARED_PATHS
    jdays = JOHNSON_DAYS if args.johnson_days is None else args.johnson_days
    jobs = args.jobs or (1 if args.quick else 2)
    shares = [0.0, 0.05, 0.3] if args.quick else [0.0, 0.05, 0.1, 0.2, 0.3]
    views = ("full", "DHT cap") if n > VIEW_CAP else ("full",)
    if args.overclaim:
        shares = [0.05, 0.1, 0.2] if not args.quick else [0.1]
        views = ("full", "over-claim, self-report", "over-claim, measured")
    specs = [(share, view) for share in shares for view in (views if share > 0 else ("full",))]
    jshares = [] if jdays <= 0 or args.overclaim else [0.1] if args.quick else [0.05, 0.1]
    wall = time.perf_counter()
    executor = ProcessPoolExecutor(max_workers=jobs) if jobs > 1 else None
    if executor is not None:  # the longest jobs first: the 180-day rows, then the largest shares
        jfutures = [executor.submit(johnson_row_job, n, clients, args.seed, jdays, s, pool) for s in jshares]
        futures = {
            spec: executor.submit(directory_rows, n, clients, args.seed, args.days, *spec, pool)
            for spec in reversed(specs)
        }
    rows: dict[tuple[float, str], list[Outcome]] = {}
    if executor is not None:
        for future in as_completed(futures.values()):
            spec = next(k for k, f in futures.items() if f is future)
            rows[spec] = future.result()
            print(f"# {pct(spec[0])} {spec[1]}: {time.perf_counter() - wall:.0f} s", flush=True)
    else:
        for spec in specs:
            rows[spec] = directory_rows(n, clients, args.seed, args.days, *spec, pool)
            print(f"# {pct(spec[0])} {spec[1]}: {time.perf_counter() - wall:.0f} s", flush=True)
    outcomes = [o for spec in specs for o in rows[spec]]
    schedules = _schedules(clients, args.seed, args.days)
    print(
        f"# {n} relays, {clients} clients x {args.days} days, "
        f"{statistics.mean(len(s) for s in schedules):.0f} circuits per client, "
        f"{pool} shared real paths per directory; wall {time.perf_counter() - wall:.1f} s"
    )
    print(table(HEADERS, [row(o) for o in outcomes]))
    lines = compromise_lines(outcomes, args.days)
    if lines:
        print()
        print("\n".join(lines))
    if executor is not None:
        johnson = [f.result() for f in jfutures]
        executor.shutdown()
    else:
        johnson = [johnson_row_job(n, clients, args.seed, jdays, s, pool) for s in jshares]
    if johnson:
        print(
            f"\n# Johnson-style: {n} relays, {clients} clients x {jdays} days, "
            f"{johnson[0].circuits / clients:.0f} circuits per client, guards, {pool} shared real paths"
        )
        print(table(JOHNSON_HEADERS, [johnson_row(o, jdays) for o in johnson]))
    print(f"# wall {time.perf_counter() - wall:.1f} s")
    path = out_path(args.out, "path_compromise.png")
    plot(outcomes, johnson, args.days, jdays, str(path))
    print(f"plot: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

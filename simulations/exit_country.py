"""Study 4: what pinning an exit country costs, at 10,000 relays (issue 21, item 4).

    python -m simulations.exit_country [--quick] [--seed N] [--relays N] [--clients N] [--days D]

The directory is path_compromise's (`consensus.make_population`: 10,000 relays, 20 % exits,
Tor-like bandwidths); each exit is given a country so that the countries' shares of exit weight
follow EXIT_SHARE below.  Source: Tor Metrics, Relay Search aggregated by country
(https://metrics.torproject.org/rs.html#aggregate/cc), the "exit probability" column as read in
2024, rounded; APPROXIMATE (not a snapshot: the shares move by a few points month to month), and
the long tail of ~60 other countries is one bucket that nobody pins.

Real code: `directory.path_selection.select_path` with `PathRequest.exits` (what ExitNodes
resolves to in directory.node_restrictions) draws every path, `GuardSet.primary` every client's
guards, through path_compromise's `SharedPaths` machinery (PinnedPaths below only gives its
pool the pinned exits), the same user model and 30 days.

Printed as `name value unit` lines:
* concentration: exits a pinned user chooses among, their effective number (1 / sum p^2 of exit
  probabilities: how many equal exits would give the same spread), the largest one's probability,
  and the load factor on that country's exits when 10 % of users pin it (0.9 + 0.1 / share);
* compromise: an adversary holding 10 % of all selection weight as exits, either spread over the
  countries like honest exits ("spread") or all in the pinned country ("in-country": it runs
  its exits where users pin); guards on; the share of circuits with the adversary at hop 1 AND
  exit (end-to-end correlation) and the clients so compromised at least once in 30 days.
"""

from __future__ import annotations

import argparse
import random
import time

from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.directory.guards import GuardSet
from onionmesh.directory.path_selection import PathRequest, bandwidth_weight, select_path
from simulations.consensus import make_population
from simulations.path_compromise import SharedPaths, _schedules, guard_epochs
from simulations.relays import PyRng

# share of exit probability by country (Tor Metrics Relay Search, 2024, approximate; see above)
EXIT_SHARE = {
    "de": 0.33, "us": 0.17, "nl": 0.12, "fr": 0.06, "lu": 0.04, "ch": 0.03, "se": 0.03,
    "fi": 0.02, "at": 0.02, "ro": 0.02, "pl": 0.015, "gb": 0.015, "ca": 0.015, "no": 0.01,
    "is": 0.01, "other": 0.095,
}  # fmt: skip
PINS = ("de", "fr", "se")  # the largest, a middle and a small exit country
ADVERSARY_SHARE = 0.10
PINNING_USERS = 0.10  # for the load factor


def assign_countries(exits: list[RelayDescriptor], rng: random.Random) -> dict[str, str]:
    """Each exit to the country furthest below its target weight (random order, heaviest first):
    the countries' exit-weight shares come out within one relay's weight of EXIT_SHARE."""
    order = sorted(exits, key=lambda d: (-bandwidth_weight(d), rng.random()))
    total = sum(bandwidth_weight(d) for d in exits)
    got = dict.fromkeys(EXIT_SHARE, 0.0)
    out = {}
    for d in order:
        cc = max(EXIT_SHARE, key=lambda c: EXIT_SHARE[c] * total - got[c])
        got[cc] += bandwidth_weight(d)
        out[d.fingerprint] = cc
    return out


class PinnedPaths(SharedPaths):
    """SharedPaths whose pool is drawn with ExitNodes resolved to `exits` (None: no pin)."""

    def __init__(
        self,
        descs: list[RelayDescriptor],
        adversary: set[str],
        size: int,
        prng: PyRng,
        exits: frozenset[str] | None,
    ) -> None:
        self.descs, self.adversary, self.prng = descs, adversary, prng
        self.by_fp = {d.fingerprint: d for d in descs}
        req = PathRequest(port=443, exits=exits)
        self.paths = [
            (p[0].fingerprint, p[-1].fingerprint)
            for p in (select_path(descs, req, prng) for _ in range(size))
        ]
        self.real_paths = size
        self._hop1: dict[tuple[tuple[str, ...], tuple[bool, ...]], str] = {}


def exit_spread(descs: list[RelayDescriptor], allowed: frozenset[str] | None) -> tuple[int, float, float]:
    """(exits, effective number, largest probability) among the exits a user may draw."""
    weights = [
        bandwidth_weight(d) for d in descs if d.is_exit and (allowed is None or d.fingerprint in allowed)
    ]
    total = sum(weights)
    probs = [w / total for w in weights]
    return len(weights), 1 / sum(p * p for p in probs), max(probs)


def compromise(
    descs: list[RelayDescriptor],
    adversary: set[str],
    allowed: frozenset[str] | None,
    schedules: list[list[float]],
    pool: int,
    days: int,
    seed: int,
) -> tuple[float, float, float]:
    """(adversary share of the allowed exits' weight, circuits compromised, clients compromised)."""
    weights = {d.fingerprint: bandwidth_weight(d) for d in descs if d.is_exit}
    usable = {fp: w for fp, w in weights.items() if allowed is None or fp in allowed}
    adv_exit = sum(w for fp, w in usable.items() if fp in adversary) / sum(usable.values())
    paths = PinnedPaths(descs, adversary, pool, PyRng(seed), allowed)
    rng = random.Random(seed)
    bad = circuits = clients = 0
    for c, times in enumerate(schedules):
        epochs = guard_epochs(GuardSet(rng=PyRng(seed * 7919 + c)), descs, days)
        run = paths.client(times, rng, epochs)
        bad += run.bad
        circuits += len(times)
        clients += run.first is not None
    return adv_exit, bad / max(1, circuits), clients / len(schedules)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m simulations.exit_country", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--quick", action="store_true", help="1,000 relays, few clients (CI)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--relays", type=int, default=None)
    ap.add_argument("--clients", type=int, default=None)
    ap.add_argument("--days", type=int, default=None)
    args = ap.parse_args(argv)
    n = args.relays or (1000 if args.quick else 10_000)
    clients = args.clients or (40 if args.quick else 250)
    days = args.days or (7 if args.quick else 30)
    pool = 200 if args.quick else 1000
    wall = time.perf_counter()
    population = make_population(n, n // 6, args.seed)
    rng = random.Random(args.seed)
    honest = [r.descriptor for r in population.honest[:n]]
    country = assign_countries([d for d in honest if d.is_exit], rng)
    print(f"relays {n} relays")
    print(f"exits {len(country)} relays")

    def pinned(cc: str, where: dict[str, str]) -> frozenset[str]:
        return frozenset(fp for fp, c in where.items() if c == cc)

    count, effective, top = exit_spread(honest, None)
    print(f"nopin.exits {count} relays")
    print(f"nopin.effective_exits {effective:.1f} relays")
    print(f"nopin.top_exit_probability {100 * top:.2f} %")
    for cc in PINS:
        allowed = pinned(cc, country)
        count, eff, top = exit_spread(honest, allowed)
        share = sum(bandwidth_weight(d) for d in honest if d.fingerprint in allowed) / sum(
            bandwidth_weight(d) for d in honest if d.is_exit
        )
        print(f"pin_{cc}.exit_weight_share {100 * share:.1f} %")
        print(f"pin_{cc}.exits {count} relays")
        print(f"pin_{cc}.effective_exits {eff:.1f} relays")
        print(f"pin_{cc}.top_exit_probability {100 * top:.2f} %")
        factor = (1 - PINNING_USERS) + PINNING_USERS / share
        print(f"pin_{cc}.load_factor_at_{int(100 * PINNING_USERS)}pct_pinning {factor:.2f} x")

    relays, adversary = population.directory(n, ADVERSARY_SHARE)
    descs = [r.descriptor for r in relays]
    adv_exits = [d for d in descs if d.fingerprint in adversary]
    spread = {**country, **assign_countries(adv_exits, rng)}  # the adversary spread like everyone
    schedules = _schedules(clients, args.seed, days)
    print(f"adversary_weight {100 * ADVERSARY_SHARE:.1f} %")
    print(f"clients {clients} clients")
    print(f"days {days} days")
    rows = [("nopin", None)]
    for cc in PINS:
        rows.append((f"pin_{cc}.spread", pinned(cc, spread)))
        in_country = pinned(cc, country) | {d.fingerprint for d in adv_exits}
        rows.append((f"pin_{cc}.in_country", in_country))
    for name, allowed in rows:
        adv_exit, circ, cl = compromise(descs, adversary, allowed, schedules, pool, days, args.seed)
        print(f"{name}.adversary_exit_probability {100 * adv_exit:.1f} %")
        print(f"{name}.circuits_compromised {100 * circ:.3f} %")
        print(f"{name}.clients_compromised_by_day_{days} {100 * cl:.1f} %")
    print(f"wall {time.perf_counter() - wall:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

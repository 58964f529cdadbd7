"""A client's directory cost with directory guards: bytes per hour and relays that learn it exists.

    python -m simulations.dir_client_cost [--quick] [--relays N] [--seed N]

Runs the project's own sans-I/O code on synthetic relays with real keys (simulations.relays):
a source's hourly states (directory.dir_state), the signed SNAPSHOT and DIFFs a source serves
(directory.dir_list.make_snapshot/make_diff), the client applying and verifying them
(apply_diff: every ADD and RENEW descriptor verified), and the client's entry guards
(directory.guards) and directory guards (directory.dir_guards) choosing whom it talks to.

Model (docs/directory-design.md §4.1, §7.1; assumptions, not measurements of a deployed network):
* each relay is online or not by a Weibull session model (simulations.churn.SessionModel), read
  at every hour; RUNNING at hour E iff online at E or E-1 (a heartbeat for E-1 or E); listed
  without RUNNING iff online at some hour of E-24..E; 2 % of relays leave for good and 2 % join
  per day;
* every relay re-signs its descriptor once a day (`--resign-hours`, 24; relays re-sign every
  0.5 h today), at its own hour, and rotates its onion key weekly (a new descriptor body);
* each hour the client fetches a DIFF from its primary directory guard and a HEAD from the two
  others; every document costs whole 4,096-byte cells of 4,070 document bytes, the DIR_GETs one
  cell each, and each hour is charged three one-hop circuit set-ups (CREATE + CREATED, 8,192 B)
  as if no circuit lived longer than an hour (pessimistic);
* relays that learn the client's address in a day: the entry guard it uses each hour (the first
  usable primary guard), every running directory guard it asks, and on the first day its 3
  bootstrap contacts.

Prints `name value unit` lines: sim.client_dir_bytes_per_hour_10k (steady state, second day),
sim.client_dir_first_start_bytes_10k, sim.client_distinct_relays_contacted_per_day (second day)
and ..._first_day (with the bootstrap contacts); the suffix is the relay count when it is not 10k.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from dataclasses import dataclass

from onionmesh.crypto.keys import IdentityKey, OnionKey, OnionKeyCert
from onionmesh.directory import dir_list as dl
from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.directory.dir_guards import DirGuardSet
from onionmesh.directory.dir_state import RUNNING, DirEntry, DirState
from onionmesh.directory.guards import GuardSet
from simulations.churn import SessionModel
from simulations.relays import EPOCH, PyRng, random_ip, tor_like_bandwidth

HOUR = 3600
CELL, CELL_DOC = 4096, 4070
CREATE_CREATED = 2 * CELL
HOURS = 48
T0 = (EPOCH // HOUR + 1) * HOUR  # the start of an epoch


def cells(n: int) -> int:
    return max(1, math.ceil(n / CELL_DOC))


@dataclass
class SimRelay:
    identity: IdentityKey
    ip: str
    bandwidth: int
    online: list[bool]  # per hour, -24 .. HOURS
    joins: int  # first hour it exists
    leaves: int  # first hour it no longer exists
    resign_at: float  # hour offset of its daily re-signing
    rotate_at: int  # hour of its onion-key rotation
    _cache: dict[tuple[int, int], RelayDescriptor]

    def descriptor(self, hour: int, resign_hours: float, rng: PyRng) -> RelayDescriptor:
        """Its descriptor at the cut-off of `hour`: re-signed every `resign_hours`, a new onion key
        from `rotate_at` on."""
        k = math.floor((hour - self.resign_at) / resign_hours)
        rotated = int(hour >= self.rotate_at)
        key = (k, rotated)
        if key not in self._cache:
            published = T0 + int((k * resign_hours + self.resign_at) * HOUR)
            if rotated:  # a rotation re-signs at once
                published = max(published, T0 + self.rotate_at * HOUR + 1)
            cert = self._cert(rotated, rng)
            self._cache[key] = RelayDescriptor.create(
                identity=self.identity, onion_cert=cert, nickname="r", link_addresses=[(self.ip, 9001)],
                dht_contact=(self.ip, 9002), exit_policy="", bandwidth=self.bandwidth,
                published=published, lifetime=72 * HOUR,
            )  # fmt: skip
        return self._cache[key]

    def _cert(self, rotated: int, rng: PyRng) -> OnionKeyCert:
        certs: dict[int, OnionKeyCert] = self.__dict__.setdefault("certs", {})
        if rotated not in certs:
            certs[rotated] = OnionKeyCert.issue(
                self.identity, OnionKey.generate(rng).public, T0 - 2 * 86_400, T0 + 14 * 86_400
            )
        return certs[rotated]


def timeline(model: SessionModel, r: random.Random) -> list[bool]:
    """Online or not at each hour from -24 to HOURS, from a stationary start."""
    online = r.random() < model.online_fraction()
    left = (model.session(r) if online else model.gap(r)) * r.random()
    out = []
    t = -24 * HOUR
    for _ in range(HOURS + 25):
        while left <= 0:
            online = not online
            left += model.session(r) if online else model.gap(r)
        out.append(online)
        t += HOUR
        left -= HOUR
    return out


def make_relays(n: int, model: SessionModel, seed: int) -> list[SimRelay]:
    r, rng, used = random.Random(seed), PyRng(seed), set()
    relays = []
    for _ in range(n):
        gone_per_hour = 0.02 / 24
        leaves = HOURS + 1 if r.random() >= gone_per_hour * HOURS else r.randrange(HOURS)
        joins = -24 if r.random() >= gone_per_hour * HOURS else r.randrange(HOURS)
        relays.append(
            SimRelay(
                IdentityKey.generate(rng),
                random_ip(r, used),
                tor_like_bandwidth(r),
                timeline(model, r),
                joins,
                leaves,
                r.random() * 24,
                r.randrange(-168, 168),
                {},
            )
        )
    return relays


def state_at(hour: int, relays: list[SimRelay], resign_hours: float, rng: PyRng) -> DirState:
    """What an honest source lists at the cut-off of `hour` (directory.source_state's rules)."""
    entries = []
    for relay in relays:
        if not relay.joins <= hour < relay.leaves:
            continue
        i = hour + 24
        if relay.online[i] or relay.online[i - 1]:
            flags = RUNNING
        elif any(relay.online[max(0, i - 24) : i]):
            flags = 0
        else:
            continue
        entries.append(DirEntry.of(relay.descriptor(hour, resign_hours, rng), flags))
    return DirState(T0 // HOUR + hour, entries)


def run(n: int, model: SessionModel, resign_hours: float, seed: int) -> dict[str, float]:
    rng = PyRng(seed + 1)
    relays = make_relays(n, model, seed)
    source = IdentityKey.generate(rng)
    # First start at hour 0: the SNAPSHOT, verified as a client does.
    old = state_at(0, relays, resign_hours, rng)
    snapshot = dl.make_snapshot(source, old).encode()
    client = dl.state_from_snapshot(dl.decode_doc(snapshot), T0 + HOUR // 2)
    first_start = cells(len(snapshot)) * CELL + (2 + 3) * CELL + 3 * CREATE_CREATED
    r = random.Random(seed + 2)
    entry, dirs = GuardSet(rng=rng), DirGuardSet()
    per_hour: list[int] = []
    contacted: list[set[str]] = [set(), set()]
    contacted[0].update(d.fingerprint for d in r.sample(client_view(client), 3))  # bootstrap contacts
    for hour in range(1, HOURS + 1):
        new = state_at(hour, relays, resign_hours, rng)
        diff = dl.make_diff(source, old, new).encode()
        now = T0 + hour * HOUR + HOUR // 2
        client = dl.apply_diff(client, dl.decode_doc(diff), now)
        assert client.digest() == new.digest()
        old = new
        per_hour.append(cells(len(diff)) * CELL + (2 + 3) * CELL + 3 * CREATE_CREATED)
        view = client_view(client)
        day = contacted[(hour - 1) // 24]
        primary = entry.primary(now, view)
        entry_set = {g.fingerprint for g in entry.sampled}
        if primary:
            day.add(primary[0])
        listed = [e.descriptor.fingerprint for e in client.entries.values()]
        day.update(dirs.update(view, entry_set, r_rng(r), listed))
    return {
        "bytes_per_hour": sum(per_hour[24:]) / len(per_hour[24:]),
        "first_start": first_start,
        "contacted_day1": len(contacted[0]),
        "contacted_day2": len(contacted[1]),
        "running_share": sum(e.running for e in old.entries.values()) / max(1, len(old)),
    }


def client_view(state: DirState) -> list[RelayDescriptor]:
    return [e.descriptor for e in state.sorted_entries() if e.running]


def r_rng(r: random.Random) -> PyRng:
    return PyRng(r.randrange(2**32))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m simulations.dir_client_cost", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--quick", action="store_true", help="1,000 relays (CI)")
    ap.add_argument("--relays", type=int, default=None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--resign-hours", type=float, default=24.0)
    ap.add_argument("--median-session", type=float, default=2.0, help="hours (the DHT study's churn)")
    args = ap.parse_args(argv)
    n = args.relays or (1000 if args.quick else 10_000)
    suffix = "10k" if n == 10_000 else str(n)
    model = SessionModel(median_session=args.median_session * HOUR, median_gap=args.median_session * HOUR)
    wall = time.perf_counter()
    res = run(n, model, args.resign_hours, args.seed)
    print(
        f"# {n} relays, median session/gap {args.median_session} h, re-signing every {args.resign_hours} h, "
        f"seed {args.seed}: {res['running_share']:.0%} of listed relays RUNNING at the end, "
        f"wall {time.perf_counter() - wall:.0f} s"
    )
    print(f"sim.client_dir_bytes_per_hour_{suffix} {res['bytes_per_hour'] / 1000:.1f} KB")
    print(f"sim.client_dir_first_start_bytes_{suffix} {res['first_start'] / 1000:.1f} KB")
    print(f"sim.client_distinct_relays_contacted_per_day {res['contacted_day2']} relays")
    print(f"sim.client_distinct_relays_contacted_first_day {res['contacted_day1']} relays")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

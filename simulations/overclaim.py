"""Directories for path_compromise's over-claiming adversary rows (issue 19, stage 4).

The adversary of `consensus.Population.directory(n, share)` runs exits at the 10 MB/s weight cap
and really has that capacity: its weight share is its real share (the "perfect static
directory" row).  The over-claimer has the same real capacity but advertises ten times it: each
of its relays is replaced by OVERCLAIM relays of a tenth of the capacity, each advertising the
cap.  With self-reported weights it then holds about 10x its share of the weight; with measured
weights (simulations.measured_weights: the real aggregation over DAYS days, the adversary's
relays new, vouching for each other with the maximum count and reporting nothing about honest
relays) it holds what honest peers saw it carry.  The measured directory is re-signed with each
relay advertising its measured weight, which is exactly the weight
`bandwidth_weight(desc, measured)` gives (measured weights never exceed the self-report), so
`select_path` and `GuardSet` run unchanged.
"""

from __future__ import annotations

import random

from onionmesh.directory.measurement import NEW_RELAY_WEIGHT
from simulations.consensus import Population
from simulations.measured_weights import fp_of, run_days
from simulations.relays import PyRng, Relay, make_relay, random_ip

OVERCLAIM = 10
LOAD = 0.5
DAYS = 10  # a new relay doubles at most daily from 50 kB/s: 10 days reach 51 MB/s, past any cap


def overclaim_directory(pop: Population, n: int, share: float, seed: int) -> tuple[list[Relay], set[str]]:
    """The over-claiming adversary with real capacity share ≈ `share` (self-reported weights)."""
    relays, adversary = pop.directory(n, share)
    keys = PyRng(seed * 31 + 7)
    pyr, used = random.Random(seed * 31 + 7), {r.ip for r in relays}
    out = [r for r in relays if r.fingerprint not in adversary]
    bad: set[str] = set()
    for i, r in enumerate(r for r in relays if r.fingerprint in adversary):
        for j in range(OVERCLAIM):
            fake = make_relay(
                keys,
                100_000 + i * OVERCLAIM + j,
                random_ip(pyr, used),  # each at its own address, as the consensus adversary
                capacity=r.capacity // OVERCLAIM,
                advertised=r.descriptor.bandwidth,
                exit_relay=r.is_exit,
                adversary=True,
                dht_port=None,
            )
            out.append(fake)
            bad.add(fake.fingerprint)
    return out, bad


def measured_directory(relays: list[Relay], adversary: set[str], seed: int) -> list[Relay]:
    """The same relays, re-signed to advertise the weight DAYS of measurement gave them.  Honest
    relays start at their established weight (their capacity, capped by their self-report); the
    adversary's relays are new (§6 rule 4: 50 kB/s, at most doubling daily)."""
    coalition = [fp_of(r) for r in relays if r.fingerprint in adversary]
    initial = {
        fp_of(r): NEW_RELAY_WEIGHT if r.adversary else max(1, min(r.capacity, r.descriptor.bandwidth) // 1000)
        for r in relays
    }
    weights, _ = run_days(relays, DAYS, LOAD, coalition=coalition, initial=initial)
    keys = PyRng(seed * 31 + 11)
    return [
        make_relay(
            keys,
            i,
            r.ip,
            capacity=r.capacity,
            advertised=1000 * weights[fp_of(r)],
            exit_relay=r.is_exit,
            adversary=r.adversary,
            dht_port=None,
        )
        for i, r in enumerate(relays)
    ]

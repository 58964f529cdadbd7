"""Days of measured weights for a synthetic directory: what relays would report, aggregated by the
real `directory.measurement` (docs/directory-design.md §6).

A fluid model of one day's traffic (expected bytes, no sampling noise: a relay in a day carries
thousands of circuits, far more than a study can draw with `select_path`):

* Positions are drawn as `select_path` draws them, by weight: hop 1 and middles among all relays,
  the exit among exits.  With total demand T bytes/s per position (each byte crosses 3 relays),
  relay R's demand is T·(p1(R) + pm(R) + pe(R)); it carries at most its capacity, so a circuit
  through R runs at b(R) = min(1, capacity/demand) of its share (a circuit's rate is its
  slowest hop's: the pair's min(b) here).
* Reports follow what the runtime can count (runtime/relay/peer_bytes.py): a relay attributes
  bytes only on links it opened, so hop 1 reports its middle and the middle reports its exit;
  kbytes_X(R) = 86.4 · T · (p1(X)·pm(R) + pm(X)·pe(R)) · min(b(X), b(R)).  Each reporter lists
  a uniform sample of `max_peers` peers (§3.4: 512, keyed by `measurement.pick_key`).
* Colluding reporters (`coalition`) report the cap (2^32-1 kB) for each other and 0 for everyone
  else (vouching and deflating at once).

Signatures are not made here (the aggregation does not verify: sources verify on receipt, and
10,000 signatures a day would only cost time); the report objects are the real ones.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from onionmesh.directory.measurement import U32_MAX, Report, measured, next_weights
from simulations.relays import Relay


def fp_of(relay: Relay) -> bytes:
    return bytes.fromhex(relay.fingerprint)


def day_reports(
    relays: list[Relay],
    weights: dict[bytes, int],
    load: float,
    max_peers: int = 512,
    coalition: Iterable[bytes] = (),
    seed: int = 0,
) -> list[Report]:
    """One day's reports under `weights` (kB/s) at network `load` (fraction of total capacity)."""
    fps = [fp_of(r) for r in relays]
    w = [max(1, weights.get(fp, 1)) for fp in fps]
    total = sum(w)
    total_exit = sum(wi for wi, r in zip(w, relays, strict=True) if r.is_exit) or 1
    p1 = [wi / total for wi in w]
    pm = p1
    pe = [wi / total_exit if r.is_exit else 0.0 for wi, r in zip(w, relays, strict=True)]
    t = load * sum(r.capacity for r in relays) / 3  # bytes/s per position
    demand = [t * (p1[i] + pm[i] + pe[i]) for i in range(len(relays))]
    b = [min(1.0, r.capacity / d) if d > 0 else 1.0 for r, d in zip(relays, demand, strict=True)]
    bad = set(coalition)
    rng = random.Random(seed)
    everyone = range(len(relays))
    out = []
    for i, fp in enumerate(fps):
        if fp in bad:
            peers = {fps[j]: U32_MAX for j in everyone if fps[j] in bad and j != i}
        else:
            # The runtime lists a keyed uniform sample (measurement.pick_key); a seeded uniform
            # sample here (hashing 10,000 x 10,000 keys a day would only cost time).
            sample = rng.sample(everyone, min(len(relays), max_peers + 1))
            peers = {}
            for j in sample:
                kb = int(86.4 * t * (p1[i] * pm[j] + pm[i] * pe[j]) * min(b[i], b[j]))
                if j != i and kb > 0:
                    peers[fps[j]] = min(U32_MAX, kb)
        listed = sorted(peers.items())[:max_peers] if len(peers) <= max_peers else sorted(peers.items())
        out.append(Report(relays[i].descriptor.identity_pk, 0, tuple(listed[:max_peers])))
    return out


def run_days(
    relays: list[Relay],
    days: int,
    load: float,
    max_peers: int = 512,
    coalition: Iterable[bytes] = (),
    initial: dict[bytes, int] | None = None,
) -> tuple[dict[bytes, int], list[dict[bytes, int]]]:
    """Start from `initial` weights (default: the self-reports, today's weights), then `days` of
    measurement; final weights (kB/s by fingerprint) and each day's."""
    advertised = {fp_of(r): r.descriptor.bandwidth for r in relays}
    weights = (
        dict(initial) if initial is not None else {fp: max(1, adv // 1000) for fp, adv in advertised.items()}
    )
    exits = [fp_of(r) for r in relays if r.is_exit]  # scaled by their position (§6)
    history = [weights]
    bad = list(coalition)
    for day in range(days):
        reports = day_reports(relays, weights, load, max_peers, bad, seed=day)
        m = measured(reports, weights)
        weights = next_weights(advertised, weights, m, exits)
        history.append(weights)
    return weights, history


def as_hex(weights: dict[bytes, int]) -> dict[str, int]:
    """For `PathRequest.weights`: fingerprints as the descriptors spell them."""
    return {fp.hex().upper(): w for fp, w in weights.items()}


def fluid_utilisation(relays: list[Relay], weights: dict[bytes, int], load: float) -> dict[str, float]:
    """Per relay, expected demand over capacity under `weights` (the fluid model above): the
    sampled figure without the sampling noise of a few thousand paths."""
    w = [max(1, weights.get(fp_of(r), 1)) for r in relays]
    total = sum(w)
    total_exit = sum(wi for wi, r in zip(w, relays, strict=True) if r.is_exit) or 1
    t = load * sum(r.capacity for r in relays) / 3
    out = {}
    for wi, r in zip(w, relays, strict=True):
        demand = t * (2 * wi / total + (wi / total_exit if r.is_exit else 0.0))
        out[r.fingerprint] = demand / r.capacity
    return out

"""Pre-built internal circuits for onion services: their paths, and which one fits a target.

Tor keeps a few 3-hop "internal" circuits ready and cannibalizes one for an onion-service circuit
by extending it one hop to the introduction or rendezvous point.  onionmesh does the same on
exactly the paths `vanguards.VanguardSet.path` gives today, cut before their last hop:

* SHORT = guard, L2          (extended to the rendezvous point: a client rendezvous circuit, G-L2-RP)
* LONG  = guard, L2, middle  (extended to the intro point or the rendezvous point: client intro
  and service rendezvous circuits, G-L2-M-last)

A pre-built circuit fits a target `last` only if the full path is one `VanguardSet.path` could
have returned for it now: its guard is the guard the node would pick for `last` (the first
primary guard that does not conflict with it), its L2 is still a current layer-2 vanguard, and no
two of its hops and `last` share a relay, a family or a /16.  The middle is drawn before the last
hop is known (as Tor's), then checked against it.

Sans-I/O: fed the relays, the guard list, the vanguard set, the time and a random source.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.directory.path_selection import bandwidth_weight, relays_conflict, weighted_index
from onionmesh.directory.vanguards import HsPurpose, VanguardSet
from onionmesh.errors import NoHsPath
from onionmesh.rng import Rng


class PrebuiltKind(enum.Enum):
    SHORT = "short"  # G, L2
    LONG = "long"  # G, L2, M


# Which purposes are served from the pool, with which kind (intro circuits of a service live for
# days and are not on anyone's critical path: they are built whole, as before).
KIND_OF: dict[HsPurpose, PrebuiltKind] = {
    HsPurpose.CLIENT_REND: PrebuiltKind.SHORT,
    HsPurpose.CLIENT_INTRO: PrebuiltKind.LONG,
    HsPurpose.SERVICE_REND: PrebuiltKind.LONG,
}


def guard_for(
    guards: Sequence[str], by_fp: dict[str, RelayDescriptor], last: RelayDescriptor | None
) -> str | None:
    """The guard an onion-service circuit to `last` starts at (hs_circuits' rule): the first
    primary guard listed and not conflicting with `last` (with no last hop: the first listed)."""
    return next(
        (g for g in guards if g in by_fp and (last is None or not relays_conflict(by_fp[g], last))), None
    )


def prebuilt_path(
    kind: PrebuiltKind,
    vanguards: VanguardSet,
    relays: Sequence[RelayDescriptor],
    guards: Sequence[str],
    now: float,
    rng: Rng,
) -> list[RelayDescriptor]:
    """The hops of a new pre-built circuit: the first primary guard, an L2, (a middle)."""
    by_fp = {r.fingerprint: r for r in relays}
    guard = guard_for(guards, by_fp, None)
    if guard is None:
        raise NoHsPath("no primary guard listed")
    g = by_fp[guard]
    l2s = [by_fp[fp] for fp in vanguards.update(now, relays) if fp in by_fp]
    l2s = [v for v in l2s if not relays_conflict(v, g)]
    if not l2s:
        raise NoHsPath("no layer-2 vanguard fits this guard")
    l2 = l2s[rng.randbelow(len(l2s))]
    if kind is PrebuiltKind.SHORT:
        return [g, l2]
    pool = [r for r in relays if not any(relays_conflict(r, x) for x in (g, l2))]
    if not pool:
        raise NoHsPath("no middle relay fits")
    return [g, l2, pool[weighted_index(rng, [bandwidth_weight(r) for r in pool])]]


def fits(
    path: Sequence[RelayDescriptor],
    purpose: HsPurpose,
    last: RelayDescriptor,
    vanguards: VanguardSet,
    relays: Sequence[RelayDescriptor],
    guards: Sequence[str],
    now: float,
) -> bool:
    """Would `path + [last]` be a path `VanguardSet.path(purpose, ..., last)` could give now?"""
    kind = KIND_OF.get(purpose)
    if kind is None or len(path) != (2 if kind is PrebuiltKind.SHORT else 3):
        return False
    by_fp = {r.fingerprint: r for r in relays}
    if any(h.fingerprint not in by_fp for h in path) or last.fingerprint not in by_fp:
        return False  # a hop (or the target) left the directory
    if path[0].fingerprint != guard_for(guards, by_fp, last):
        return False
    if path[1].fingerprint not in vanguards.update(now, relays):
        return False
    hops = [*path, last]
    return not any(relays_conflict(a, b) for i, a in enumerate(hops) for b in hops[i + 1 :])


def still_usable(
    path: Sequence[RelayDescriptor],
    vanguards: VanguardSet,
    relays: Sequence[RelayDescriptor],
    guards: Sequence[str],
    now: float,
) -> bool:
    """May a pooled circuit stay in the pool?  Its guard is still the first primary guard, its L2
    still a vanguard, and every hop still listed (else it could never fit: closed)."""
    by_fp = {r.fingerprint: r for r in relays}
    return (
        all(h.fingerprint in by_fp for h in path)
        and path[0].fingerprint == guard_for(guards, by_fp, None)
        and path[1].fingerprint in vanguards.update(now, relays)
    )


def choose(
    candidates: Sequence[tuple[int, Sequence[RelayDescriptor]]],
    purpose: HsPurpose,
    last: RelayDescriptor,
    vanguards: VanguardSet,
    relays: Sequence[RelayDescriptor],
    guards: Sequence[str],
    now: float,
) -> int | None:
    """The key of the first (oldest) pooled circuit that fits `purpose` to `last`, or None."""
    for key, path in candidates:
        if fits(path, purpose, last, vanguards, relays, guards, now):
            return key
    return None

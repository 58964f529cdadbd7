"""Choosing relays for a circuit: exit first, then the rest, never the same relay twice.

A first form: uniform among usable relays, with the exit chosen among relays whose policy
might accept the port.  Bandwidth weighting, guards and family/subnet rules come with the
circuit-reliability work.
"""

from __future__ import annotations

from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.directory.exit_policy import ExitPolicy
from onionmesh.errors import DirectoryError, PolicyError
from onionmesh.rng import Rng, choice


def exit_might_accept(desc: RelayDescriptor, port: int | None) -> bool:
    """Could this relay's exit policy accept `port` for some destination (before DNS is done)?"""
    if not desc.is_exit:
        return False
    if port is None:
        return True
    try:
        policy = ExitPolicy.parse(desc.exit_policy)
    except PolicyError:
        return False
    if policy.allows_port_somewhere(port):
        return True
    # Policies that accept only private ranges (a test mesh's loopback exits) can still serve them.
    return any(r.accept and r.port_lo <= port <= r.port_hi for r in policy.rules)


def select_path(
    relays: list[RelayDescriptor],
    hops: int,
    rng: Rng,
    *,
    port: int | None = None,
    exit_fp: str | None = None,
    via: list[str] | None = None,
    avoid: set[str] | None = None,
) -> list[RelayDescriptor]:
    """Pick `hops` distinct relays; the last is an exit for `port` (or the one named by exit_fp)."""
    if not 1 <= hops <= 8:
        raise DirectoryError("hop count must be 1..8")
    avoid = avoid or set()
    by_fp = {d.fingerprint: d for d in relays}
    if exit_fp is not None:
        if exit_fp not in by_fp:
            raise DirectoryError("unknown exit relay")
        exit_desc = by_fp[exit_fp]
    else:
        exits = [d for d in relays if exit_might_accept(d, port) and d.fingerprint not in avoid]
        if not exits:
            exits = [d for d in relays if exit_might_accept(d, port)]
        if not exits:
            raise DirectoryError("no exit relay accepts that port")
        exit_desc = choice(rng, exits)
    path: list[RelayDescriptor] = []
    for fp in via or []:
        if fp not in by_fp:
            raise DirectoryError("unknown relay in --via")
        path.append(by_fp[fp])
    used = {d.fingerprint for d in path} | {exit_desc.fingerprint}
    while len(path) < hops - 1:
        candidates = [d for d in relays if d.fingerprint not in used and d.fingerprint not in avoid]
        if not candidates:
            candidates = [d for d in relays if d.fingerprint not in used]
        if not candidates:
            raise DirectoryError("not enough relays for that many hops")
        pick = choice(rng, candidates)
        used.add(pick.fingerprint)
        path.append(pick)
    path.append(exit_desc)
    if len(path) != hops or len({d.fingerprint for d in path}) != hops:
        raise DirectoryError("path would repeat a relay")
    return path

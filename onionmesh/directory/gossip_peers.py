"""Which relays a directory source reconciles with: 4 placed and 4 random gossip peers (sans-I/O).

Why placed peers: a Sybil cannot choose to be an honest source's placed peer without grinding
keys per source and per day, because the positions are `H("om-gossip", own node ID | day | i)`
(docs/directory-design.md §4.1); random peers, weighted by bandwidth and kept for a day, make
the gossip graph an expander that no fixed set of Sybils sits across.

The liveness share (the relays whose heartbeats this source fetches itself) is the
`LIVENESS_SHARE` relays nearest to the source's own node ID.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.directory.dht_records import node_id_for
from onionmesh.directory.path_selection import bandwidth_weight, weighted_index
from onionmesh.rng import Rng

PLACED = 4
RANDOM = 4
LIVENESS_SHARE = 24


def _position(node_id: bytes, day: int, i: int) -> int:
    data = node_id + day.to_bytes(4, "big") + bytes([i])
    return int.from_bytes(hashlib.blake2b(data, digest_size=20, person=b"om-gossip").digest(), "big")


def _distance(desc: RelayDescriptor, position: int) -> int:
    return int.from_bytes(node_id_for(desc.identity_pk), "big") ^ position


def placed_peers(
    own_node_id: bytes, day: int, relays: Sequence[RelayDescriptor], n: int = PLACED
) -> list[RelayDescriptor]:
    """For i = 0..n-1 the relay nearest (XOR) to position i that is not already chosen, nor us."""
    others = [r for r in relays if node_id_for(r.identity_pk) != own_node_id]
    chosen: list[RelayDescriptor] = []
    for i in range(n):
        left = [r for r in others if r not in chosen]
        if not left:
            break
        position = _position(own_node_id, day, i)
        chosen.append(min(left, key=lambda r: (_distance(r, position), r.fingerprint)))
    return chosen


def gossip_peers(
    own_node_id: bytes, day: int, relays: Sequence[RelayDescriptor], rng: Rng
) -> list[RelayDescriptor]:
    """The day's peers: the placed ones, then RANDOM more drawn by bandwidth weight, all distinct."""
    peers = placed_peers(own_node_id, day, relays)
    left = [r for r in relays if r not in peers and node_id_for(r.identity_pk) != own_node_id]
    for _ in range(RANDOM):
        if not left:
            break
        peers.append(left.pop(weighted_index(rng, [bandwidth_weight(r) for r in left])))
    return peers


def gossip_buckets(differing: Sequence[int], limit: int, rng: Rng) -> list[int]:
    """Which of the buckets that differ from a gossip peer's to fetch in one round (at most `limit`)."""
    left = list(differing)
    if len(left) <= limit:
        return left
    for i in range(limit):  # a partial Fisher-Yates shuffle: `limit` distinct buckets, uniformly
        j = i + rng.randbelow(len(left) - i)
        left[i], left[j] = left[j], left[i]
    return sorted(left[:limit])


def heartbeat_epochs(epoch: int, before_cut: bool) -> tuple[int, ...]:
    """The epochs whose heartbeats every gossip round pulls (for the buckets that lack some): the
    current one, and the previous one until the current state is cut (RUNNING at the cut of E
    needs a heartbeat for E-1 or E)."""
    return (epoch - 1, epoch) if before_cut else (epoch,)


def liveness_share(
    own_node_id: bytes, relays: Sequence[RelayDescriptor], n: int = LIVENESS_SHARE
) -> list[RelayDescriptor]:
    """The relays this source checks itself each epoch: the n nearest to its own node ID."""
    own = int.from_bytes(own_node_id, "big")
    others = [r for r in relays if node_id_for(r.identity_pk) != own_node_id]
    return sorted(others, key=lambda r: (_distance(r, own), r.fingerprint))[:n]


__all__ = [
    "LIVENESS_SHARE",
    "gossip_buckets",
    "gossip_peers",
    "heartbeat_epochs",
    "liveness_share",
    "placed_peers",
]

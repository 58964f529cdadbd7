"""A directory source's gossip round with one peer (design §4.1), apart from the source's loops.

Why apart: the reconciliation is the source's largest piece and one job: compare our newest
state's HEAD with the peer's, fetch the buckets that differ (leaves, the entries we lack, their
heartbeats), and the heartbeats of this epoch we lack for relays our state lists RUNNING (those
travel also where the states agree: RUNNING needs a heartbeat for E-1 or E).  Every item fetched
is self-signed and verified by directory.source_state; the peer is never trusted further.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from typing import Protocol

from onionmesh.directory import dir_list as dl
from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.directory.dht_records import node_id_for
from onionmesh.directory.dir_state import BUCKETS, DirState
from onionmesh.directory.gossip_peers import gossip_peers
from onionmesh.directory.heartbeat import decode_heartbeat, descriptor_hash
from onionmesh.directory.source_state import SourceState
from onionmesh.errors import OnionmeshError
from onionmesh.rng import Rng
from onionmesh.runtime.dht import dir_rpc
from onionmesh.runtime.dht.node import DhtNode


class DirSource(Protocol):
    """What a gossip round uses of runtime.relay.dir_source.DirSource."""

    dht: DhtNode
    descriptor: Callable[[], RelayDescriptor | None]
    clock: Callable[[], float]
    epoch_len: float
    items: SourceState
    rng: Rng
    stats: dict[str, int]
    peer_turn: itertools.count[int]
    beat_turn: itertools.count[int]

    def newest(self) -> DirState | None: ...
    def epoch(self, now: float | None = None) -> int: ...


MAX_BUCKETS_PER_ROUND = 32


async def gossip_once(source: DirSource) -> int:
    """Reconcile with the next gossip peer: fetch what its newest state holds that we lack."""
    protocol, own, mine = source.dht.protocol, source.descriptor(), source.newest()
    if protocol is None or own is None or mine is None:
        return 0
    day = int(source.clock() // (source.epoch_len * 24))
    peers = gossip_peers(node_id_for(own.identity_pk), day, source.items.relays(), source.rng)
    if not peers:
        return 0
    peer = peers[next(source.peer_turn) % len(peers)]
    if peer.dht_contact is None:
        return 0
    address, epoch = peer.dht_contact, mine.epoch
    source.stats["gossip_rounds"] += 1
    head = await dir_rpc.call(protocol, address, "dir_head", epoch)
    try:
        doc = dl.decode_doc(head) if isinstance(head, bytes) else None
    except OnionmeshError:
        doc = None
    if doc is None or doc.kind != dl.Kind.HEAD or doc.source_pk != peer.identity_pk or doc.epoch != epoch:
        return 0
    if doc.state_digest == mine.digest():
        return await _fetch_current_beats(source, address, mine, set())
    hashes: list[bytes] = []
    for part in range(3):
        hashes += dir_rpc.parse_hashes(await dir_rpc.call(protocol, address, "dir_summary", epoch, part))
    if len(hashes) != BUCKETS:
        return 0
    ours = mine.bucket_hashes()
    differing = [b for b in range(BUCKETS) if hashes[b] != ours[b]][:MAX_BUCKETS_PER_ROUND]
    limit = asyncio.Semaphore(8)  # buckets fetched 8 at a time: a round must fit in its slot

    async def one(b: int) -> int:
        async with limit:
            return await _fetch_bucket(source, address, epoch, b)

    got = sum(await asyncio.gather(*(one(b) for b in differing)))
    source.stats["gossip_items"] += got
    return got + await _fetch_current_beats(source, address, mine, set(differing))


async def _fetch_current_beats(
    source: DirSource, address: tuple[str, int], mine: DirState, done: set[int]
) -> int:
    """This epoch's heartbeats of the relays our newest state lists RUNNING and that we hold
    none of for this epoch, from the peer (up to MAX_BUCKETS_PER_ROUND buckets a round, in
    turn), and the last epoch's where we hold none of that either (early in an epoch most peers
    hold only the last epoch's; either keeps a relay RUNNING at the next cut).  Why: RUNNING
    needs a heartbeat for E-1 or E, and where two sources' states agree no bucket differs, so the
    bucket fetches above would never carry it: a relay outside our liveness share would drop out
    of every other state (issue 23, relay 0 of the bench)."""
    protocol = source.dht.protocol
    assert protocol is not None
    now_epoch = source.epoch()
    wanted: dict[int, set[int]] = {}  # bucket -> epochs
    for fp, e in mine.entries.items():
        if not e.running or fp[0] in done:
            continue
        h = descriptor_hash(e.raw)
        if source.items.has_beat(fp, h, (now_epoch,)):
            continue
        epochs = wanted.setdefault(fp[0], set())
        epochs.add(now_epoch)
        if not source.items.has_beat(fp, h, (now_epoch - 1,)):
            epochs.add(now_epoch - 1)
    lacking = sorted(wanted)
    if not lacking:
        return 0
    turn = next(source.beat_turn) * MAX_BUCKETS_PER_ROUND % len(lacking)
    buckets = (lacking[turn:] + lacking[:turn])[:MAX_BUCKETS_PER_ROUND]
    limit = asyncio.Semaphore(8)

    async def one(b: int) -> int:
        got = 0
        async with limit:
            for epoch in sorted(wanted[b]):
                for page in range(8):
                    beats = dir_rpc.parse_bytes_list(
                        await dir_rpc.call(protocol, address, "heartbeats", epoch, b, page),
                        dir_rpc.HEARTBEATS_PAGE,
                    )
                    for raw in beats:
                        with contextlib.suppress(OnionmeshError):
                            got += source.items.add_heartbeat(decode_heartbeat(raw), now_epoch)
                    if len(beats) < dir_rpc.HEARTBEATS_PAGE:
                        break
        return got

    got = sum(await asyncio.gather(*(one(b) for b in buckets)))
    source.stats["gossip_beats"] += got
    return got


async def _fetch_bucket(source: DirSource, address: tuple[str, int], epoch: int, bucket: int) -> int:
    protocol = source.dht.protocol
    assert protocol is not None
    want: list[bytes] = []
    for page in range(8):
        leaves = dir_rpc.parse_leaves(
            await dir_rpc.call(protocol, address, "dir_leaves", epoch, bucket, page)
        )
        want += [fp for fp, h16, _f, _w in leaves if fp[0] == bucket and not source.items.has_hash(fp, h16)]
        if len(leaves) < dir_rpc.LEAVES_PAGE:
            break
    got = 0
    for i in range(0, len(want), dir_rpc.GET_MAX):
        result = await dir_rpc.call(protocol, address, "dir_get", want[i : i + dir_rpc.GET_MAX])
        for entry in dir_rpc.parse_bytes_list(result, dir_rpc.GET_MAX):
            if len(entry) > 7 and int.from_bytes(entry[5:7], "big") == len(entry) - 7:
                got += source.items.add_descriptor(entry[7:], source.clock())
    now_epoch = source.epoch()
    for e in sorted({epoch, now_epoch - 1, now_epoch}):
        for page in range(8):
            beats = dir_rpc.parse_bytes_list(
                await dir_rpc.call(protocol, address, "heartbeats", e, bucket, page),
                dir_rpc.HEARTBEATS_PAGE,
            )
            for raw in beats:
                with contextlib.suppress(OnionmeshError):
                    got += source.items.add_heartbeat(decode_heartbeat(raw), now_epoch)
            if len(beats) < dir_rpc.HEARTBEATS_PAGE:
                break
    return got


__all__ = ["MAX_BUCKETS_PER_ROUND", "gossip_once"]

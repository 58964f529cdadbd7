"""A relay as directory source: keeps the full relay list by gossip, liveness checks and a slow
crawl, fixes a signed state each epoch and caches the documents clients fetch (design §4.1).

Why a loop of its own: a source's inputs are self-signed items (descriptors, heartbeats) that it
fetches from relays (`dir_self`, its liveness share), from its gossip peers (runtime.dht.dir_rpc)
and from the DHT (a crawl every `CRAWL_EPOCHS` epochs, the completeness backstop); the state is a
pure function of them (directory.source_state), fixed at `cutoff` into each epoch.  Documents
(HEAD, SUMMARY, SNAPSHOT, BUCKET, DIFF from any of the last `KEEP_STATES` states) are signed once
and cached; serving is a lookup.

Epochs are `epoch_len` seconds (3600 in a real network; tests and the testnet shorten them):
epoch E = floor(unix time / epoch_len); every timing below is a fraction of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from onionmesh.crypto.keys import IdentityKey
from onionmesh.directory import dir_list as dl
from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.directory.dht_records import node_id_for
from onionmesh.directory.dir_state import BUCKETS, DirState, fp_bytes
from onionmesh.directory.gossip_peers import gossip_buckets, gossip_peers, heartbeat_epochs, liveness_share
from onionmesh.directory.heartbeat import decode_heartbeat, descriptor_hash, sign_heartbeat
from onionmesh.directory.source_state import SourceState
from onionmesh.errors import OnionmeshError
from onionmesh.rng import DEFAULT_RNG, Rng
from onionmesh.runtime.dht import dir_rpc
from onionmesh.runtime.dht.node import DhtNode
from onionmesh.runtime.loglimit import limited
from onionmesh.runtime.safelog import get_logger

log = limited(get_logger("onionmesh.dir_source"))

DEFAULT_EPOCH = 3600.0
CUTOFF = 1 / 6  # the state of epoch E is fixed 10 minutes into it
GOSSIP_EVERY = 1 / 12  # one gossip peer every 5 minutes
CRAWL_EPOCHS = 24  # the backstop crawl: once a day
KEEP_STATES = 72  # diffs from the last 72 states (proposal 140 keeps 72 h)
MAX_DOCS = 1024  # signed documents cached
MAX_CHECKING = 64  # heartbeat fetches at once for relays that just proved their ID to us
MAX_BUCKETS_PER_ROUND = 32  # differing buckets fetched in one gossip round (chosen at random)


class DirSource:
    def __init__(
        self,
        identity: IdentityKey,
        dht: DhtNode,
        descriptor: Callable[[], RelayDescriptor | None],
        *,
        epoch_len: float = DEFAULT_EPOCH,
        rng: Rng = DEFAULT_RNG,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.identity = identity
        self.dht = dht
        self.descriptor = descriptor
        self.epoch_len = epoch_len
        self.rng = rng
        self.clock = clock
        self.items = SourceState()
        self.states: OrderedDict[int, DirState] = OrderedDict()
        self._by_digest: dict[bytes, int] = {}
        self._docs: OrderedDict[tuple[object, ...], bytes] = OrderedDict()
        self._own: tuple[int, bytes, bytes] | None = None  # epoch, descriptor, heartbeat
        self._checking: set[bytes] = set()  # relays whose heartbeat we are fetching since they proved
        self._peer_turn = itertools.count()  # whose turn it is to be the gossip peer
        self._tasks: list[asyncio.Task[None]] = []
        self._checks: set[asyncio.Task[None]] = set()
        self.stats = {"cuts": 0, "gossip_rounds": 0, "gossip_items": 0, "liveness_ok": 0, "crawls": 0}
        self.stats["gossip_beats"] = 0  # heartbeats pulled for buckets that lacked some
        self.stats["beats_on_proof"] = 0  # heartbeats fetched because their relay just proved its ID

    # --- epochs ---------------------------------------------------------------------------------
    def epoch(self, now: float | None = None) -> int:
        return int((self.clock() if now is None else now) // self.epoch_len)

    def cut_time(self, epoch: int) -> float:
        return epoch * self.epoch_len + CUTOFF * self.epoch_len

    def newest(self) -> DirState | None:
        return next(reversed(self.states.values())) if self.states else None

    def _serve(self) -> None:
        """Before answering a client or a peer: a running source that has no state yet cuts the
        current epoch now, as of now (its start-up state; see `_cut_loop`)."""
        if not self.states and self._tasks:
            self.cut(self.epoch(), self.clock())

    def make_state(self, epoch: int, at: float | None = None) -> DirState:
        """The state of `epoch` from the items held, as at its cut-off or at `at` (a test's
        misbehaving source overrides this)."""
        return self.items.state(epoch, self.cut_time(epoch) if at is None else at)

    def cut(self, epoch: int, at: float | None = None) -> DirState:
        self._take_own(epoch)
        self._take_verified()
        state = self.make_state(epoch, at)
        self.states[epoch] = state
        self._by_digest[state.digest()] = epoch
        while len(self.states) > KEEP_STATES:
            old_epoch, old = self.states.popitem(last=False)
            self._by_digest.pop(old.digest(), None)
            for key in [k for k in self._docs if k[1] == old_epoch]:
                del self._docs[key]
        self.items.prune(epoch, self.clock())
        self.stats["cuts"] += 1
        return state

    # --- items ----------------------------------------------------------------------------------
    def own(self) -> tuple[bytes, bytes] | None:
        """Our descriptor and our heartbeat for the current epoch (dir_self)."""
        desc = self.descriptor()
        if desc is None:
            return None
        epoch, raw = self.epoch(), desc.encode()
        if self._own is None or self._own[:2] != (epoch, raw):
            self._own = (epoch, raw, sign_heartbeat(self.identity, desc, epoch).encode())
        return self._own[1], self._own[2]

    def _take_own(self, epoch: int) -> None:
        own = self.own()
        if own is not None:
            self.items.add_descriptor(own[0], self.clock())
            self.items.add_heartbeat(decode_heartbeat(own[1]), epoch)

    def _take_verified(self) -> None:
        """Descriptors that relays proved to our DHT node (already verified there)."""
        protocol = self.dht.protocol
        if protocol is None:
            return
        for _addr, desc in list(protocol.verified.values()):
            raw = desc.encode()
            if not self.items.has_hash(fp_bytes(desc), descriptor_hash(raw)[:16]):
                self.items.add_descriptor(raw, self.clock())

    def take(self, raw: bytes, heartbeat: bytes | None = None) -> bool:
        new = self.items.add_descriptor(raw, self.clock())
        if heartbeat is not None:
            with contextlib.suppress(OnionmeshError):
                new = self.items.add_heartbeat(decode_heartbeat(heartbeat), self.epoch()) or new
        return new

    # --- what the RPCs serve (runtime.dht.dir_rpc.DirProvider) ----------------------------------
    def head(self, epoch: int) -> bytes | None:
        return self.doc(dl.Kind.HEAD, epoch)

    def bucket_hashes(self, epoch: int) -> list[bytes] | None:
        self._serve()
        state = self.states.get(epoch)
        return None if state is None else self._cached(("hashes", epoch), state.bucket_hashes)  # type: ignore[return-value]

    def leaves(self, epoch: int, bucket: int) -> list[dir_rpc.Leaf] | None:
        self._serve()
        state = self.states.get(epoch)
        if state is None:
            return None
        return [(e.fp, descriptor_hash(e.raw)[:16], e.flags, e.weight) for e in state.bucket(bucket)]

    def entries(self, fps: list[bytes]) -> list[bytes]:
        self._serve()
        state = self.newest()
        if state is None:
            return []
        return [state.entries[fp].encode() for fp in fps if fp in state.entries]

    def heartbeats(self, epoch: int, bucket: int) -> list[bytes]:
        return [hb.encode() for hb in self.items.heartbeats(bucket, (epoch,))]

    # --- documents for clients (runtime.relay.dir_answers) --------------------------------------
    def _cached(self, key: tuple[object, ...], make: Callable[[], object]) -> object:
        value = self._docs.get(key)
        if value is None:
            value = make()
            self._docs[key] = value  # type: ignore[assignment]
            while len(self._docs) > MAX_DOCS:
                self._docs.popitem(last=False)
        else:
            self._docs.move_to_end(key)
        return value

    def doc(self, kind: int, epoch: int = 0, from_digest: bytes = bytes(32), bucket: int = 0) -> bytes | None:
        """The signed document asked for, or None (NOT_FOUND).  epoch 0: the newest state."""
        self._serve()
        if epoch == 0:
            newest = self.newest()
            if newest is None:
                return None
            epoch = newest.epoch
        state = self.states.get(epoch)
        if state is None:
            return None
        ident = self.identity
        if kind == dl.Kind.HEAD:
            return self._cached(("head", epoch), lambda: dl.make_head(ident, state).encode())  # type: ignore[return-value]
        if kind == dl.Kind.SUMMARY:
            return self._cached(("summary", epoch), lambda: dl.make_summary(ident, state).encode())  # type: ignore[return-value]
        if kind == dl.Kind.SNAPSHOT:
            return self._cached(("snapshot", epoch), lambda: dl.make_snapshot(ident, state).encode())  # type: ignore[return-value]
        if kind == dl.Kind.BUCKET and 0 <= bucket < BUCKETS:
            return self._cached(
                ("bucket", epoch, bucket), lambda: dl.make_bucket(ident, state, bucket).encode()
            )  # type: ignore[return-value]
        if kind == dl.Kind.DIFF:
            old_epoch = self._by_digest.get(from_digest)
            if old_epoch is None or old_epoch > epoch:
                return None
            old = self.states[old_epoch]
            return self._cached(
                ("diff", epoch, from_digest), lambda: dl.make_diff(ident, old, state).encode()
            )  # type: ignore[return-value]
        return None

    # --- the loops ------------------------------------------------------------------------------
    def start(self) -> None:
        protocol = self.dht.protocol
        assert protocol is not None, "start the DHT node first"
        dir_rpc.install(protocol, self)
        protocol.on_verified = self._on_verified
        for loop, name in (
            (self._cut_loop, "dir-cut"),
            (self._liveness_loop, "dir-liveness"),
            (self._gossip_loop, "dir-gossip"),
            (self._crawl_loop, "dir-crawl"),
        ):
            self._tasks.append(asyncio.create_task(self._guard(loop, name), name=name))

    async def stop(self) -> None:
        protocol = self.dht.protocol
        if protocol is not None and protocol.on_verified == self._on_verified:
            protocol.on_verified = None
        tasks = [*self._tasks, *self._checks]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _guard(self, loop: Callable[[], Awaitable[None]], name: str) -> None:
        """Run one loop; the coroutine is made inside the task, so a stop before it runs leaks none."""
        try:
            await loop()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not end the relay; it is logged
            log.error("directory source loop failed", loop=name, error=type(exc).__name__)

    async def _sleep_until(self, when: float) -> None:
        await asyncio.sleep(max(0.0, when - self.clock()))

    async def _cut_loop(self) -> None:
        # A source's first state is cut when it is first asked for one (`_serve`: a client's
        # DIR_GET or a peer's gossip), as of that instant: a lone relay serves a list of one, and
        # a source of a network that is forming (a testnet, a test mesh) lists the relays that
        # joined since it started, not only itself.  Unasked, a source that started before its
        # epoch's cut-off cuts at it; one that started after waits to be asked or for the next
        # cut-off.  Every later epoch is cut as of its cut-off, the same instant for every source.
        # Each epoch has at most one state: nothing is ever re-cut.
        start = self.epoch()
        late = self.clock() >= self.cut_time(start)
        while True:
            now = self.clock()
            epoch = self.epoch(now)
            if now >= self.cut_time(epoch) and epoch not in self.states and not (late and epoch == start):
                self.cut(epoch)
                continue
            target = epoch if now < self.cut_time(epoch) else epoch + 1
            await self._sleep_until(self.cut_time(target))

    async def _liveness_loop(self) -> None:
        """Each epoch, at its start: the heartbeats of our liveness share, from the relays themselves."""
        while True:
            epoch = self.epoch()
            await self.check_liveness()
            await self._sleep_until(
                (epoch + 1) * self.epoch_len + self.rng.randbelow(100) / 100 * CUTOFF * self.epoch_len / 2
            )

    async def check_liveness(self) -> int:
        protocol = self.dht.protocol
        own = self.descriptor()
        if protocol is None or own is None:
            return 0
        share = liveness_share(node_id_for(own.identity_pk), self.items.relays())
        ok = 0
        for attempt in range(2):
            results = await asyncio.gather(*(self._ask_self(r) for r in share))
            ok += sum(results)
            share = [r for r, good in zip(share, results, strict=True) if not good]
            if not share or attempt:
                break
            await asyncio.sleep(min(1.0, self.epoch_len / 24))  # the callee was proving us: once more
        self.stats["liveness_ok"] += ok
        return ok

    def _on_verified(self, desc: RelayDescriptor) -> None:
        """A relay proved its ID to our DHT node: fetch its heartbeat now if we hold none for this
        or the last epoch (a relay that just joined is RUNNING at the next cut, not epochs later
        when gossip or a crawl brings it).  One fetch per relay at a time, at most MAX_CHECKING."""
        fp = fp_bytes(desc)
        epoch = self.epoch()
        if fp in self._checking or len(self._checking) >= MAX_CHECKING or not self._tasks:
            return
        if self.items.has_beat(fp, descriptor_hash(desc.encode()), (epoch - 1, epoch)):
            return
        self._checking.add(fp)

        async def check() -> None:
            try:
                for attempt in range(2):
                    if await self._ask_self(desc):
                        self.stats["beats_on_proof"] += 1
                        break
                    if attempt:
                        break
                    await asyncio.sleep(min(1.0, self.epoch_len / 24))  # it was proving us: once more
            finally:
                self._checking.discard(fp)

        task = asyncio.create_task(self._guard(check, "dir-verified"), name="dir-verified")
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def _ask_self(self, relay: RelayDescriptor) -> bool:
        protocol = self.dht.protocol
        if protocol is None or relay.dht_contact is None:
            return False
        result = await dir_rpc.call(protocol, relay.dht_contact, "dir_self")
        pair = dir_rpc.parse_bytes_list(result, 2)
        if len(pair) != 2:
            return False
        raw, hb = pair
        try:
            desc = RelayDescriptor.decode(raw)
            beat = decode_heartbeat(hb)
        except (OnionmeshError, ValueError):
            return False
        if desc.identity_pk != relay.identity_pk or desc.dht_contact != relay.dht_contact:
            return False  # only a relay's own answer, from its own address, counts
        self.items.add_descriptor(raw, self.clock())
        self.items.add_heartbeat(beat, self.epoch())
        return self.items.has_hash(beat.fp, descriptor_hash(raw)[:16])

    async def _gossip_loop(self) -> None:
        while True:
            await asyncio.sleep(self.epoch_len * GOSSIP_EVERY * (0.5 + self.rng.randbelow(1000) / 1000))
            with contextlib.suppress(OSError, TimeoutError):
                await self.gossip_once()

    async def gossip_once(self) -> int:
        """Reconcile with the next gossip peer that answers (trying each in turn at most once):
        heartbeats of this epoch (and the last, before the cut) for every bucket where we lack
        some, whatever the states say; then, if its state of our newest epoch differs from ours,
        what it lists in (at most MAX_BUCKETS_PER_ROUND of) the differing buckets."""
        protocol, own = self.dht.protocol, self.descriptor()
        if protocol is None or own is None:
            return 0
        day = int(self.clock() // (self.epoch_len * 24))
        peers = gossip_peers(node_id_for(own.identity_pk), day, self.items.relays(), self.rng)
        for _ in peers:
            peer = peers[next(self._peer_turn) % len(peers)]
            got = await self._reconcile(peer)
            if got is not None:
                return got
        return 0

    async def _reconcile(self, peer: RelayDescriptor) -> int | None:
        """One round with `peer`; None when it did not answer (or has no state of our epoch)."""
        if peer.dht_contact is None:
            return None
        assert self.dht.protocol is not None
        address, mine, now_epoch = peer.dht_contact, self.newest(), self.epoch()
        before_cut = self.clock() < self.cut_time(now_epoch)
        # Ours, or (a source just started, with no state yet) the newest every source has cut.
        epoch = mine.epoch if mine is not None else now_epoch - before_cut
        head = await dir_rpc.call(self.dht.protocol, address, "dir_head", epoch)
        if not isinstance(head, bytes):
            return None
        self.stats["gossip_rounds"] += 1
        pulled = heartbeat_epochs(now_epoch, before_cut)
        got = 0
        for e in pulled:
            got += await self._for_buckets(
                self.items.lacking(e), lambda b, e=e: self._heartbeats(address, e, b)
            )
        self.stats["gossip_beats"] += got  # pulled whatever the states say (they may agree)
        try:
            doc = dl.decode_doc(head)
        except OnionmeshError:
            doc = None
        if (
            mine is None
            or doc is None
            or doc.kind != dl.Kind.HEAD
            or doc.source_pk != peer.identity_pk
            or doc.epoch != epoch
            or doc.state_digest == mine.digest()
        ):
            self.stats["gossip_items"] += got
            return got
        hashes: list[bytes] = []
        for part in range(3):
            hashes += dir_rpc.parse_hashes(
                await dir_rpc.call(self.dht.protocol, address, "dir_summary", epoch, part)
            )
        if len(hashes) == BUCKETS:
            ours = mine.bucket_hashes()
            differing = [b for b in range(BUCKETS) if hashes[b] != ours[b]]
            chosen = gossip_buckets(differing, MAX_BUCKETS_PER_ROUND, self.rng)
            extra = tuple(e for e in sorted({epoch, now_epoch - 1, now_epoch}) if e not in pulled)
            got += await self._for_buckets(chosen, lambda b: self._fetch_bucket(address, epoch, b, extra))
        self.stats["gossip_items"] += got
        return got

    @staticmethod
    async def _for_buckets(buckets: list[int], one: Callable[[int], Awaitable[int]]) -> int:
        limit = asyncio.Semaphore(8)  # 8 buckets at a time: a round must fit in its slot

        async def guarded(b: int) -> int:
            async with limit:
                return await one(b)

        return sum(await asyncio.gather(*(guarded(b) for b in buckets)))

    async def _heartbeats(self, address: tuple[str, int], epoch: int, bucket: int) -> int:
        protocol = self.dht.protocol
        assert protocol is not None
        got = 0
        for page in range(8):
            beats = dir_rpc.parse_bytes_list(
                await dir_rpc.call(protocol, address, "heartbeats", epoch, bucket, page),
                dir_rpc.HEARTBEATS_PAGE,
            )
            for raw in beats:
                with contextlib.suppress(OnionmeshError):
                    got += self.items.add_heartbeat(decode_heartbeat(raw), self.epoch())
            if len(beats) < dir_rpc.HEARTBEATS_PAGE:
                break
        return got

    async def _fetch_bucket(
        self, address: tuple[str, int], epoch: int, bucket: int, beat_epochs: tuple[int, ...]
    ) -> int:
        protocol = self.dht.protocol
        assert protocol is not None
        want: list[bytes] = []
        for page in range(8):
            leaves = dir_rpc.parse_leaves(
                await dir_rpc.call(protocol, address, "dir_leaves", epoch, bucket, page)
            )
            want += [fp for fp, h16, _f, _w in leaves if fp[0] == bucket and not self.items.has_hash(fp, h16)]
            if len(leaves) < dir_rpc.LEAVES_PAGE:
                break
        got = 0
        for i in range(0, len(want), dir_rpc.GET_MAX):
            result = await dir_rpc.call(protocol, address, "dir_get", want[i : i + dir_rpc.GET_MAX])
            for entry in dir_rpc.parse_bytes_list(result, dir_rpc.GET_MAX):
                if len(entry) > 7 and int.from_bytes(entry[5:7], "big") == len(entry) - 7:
                    got += self.items.add_descriptor(entry[7:], self.clock())
        for e in beat_epochs:
            got += await self._heartbeats(address, e, bucket)
        return got

    async def _crawl_loop(self) -> None:
        await asyncio.sleep(min(2.0, self.epoch_len / 12))  # let the DHT join first
        # A new source (or a new network) knows little: crawl again after 1, 2 and 4 epochs, then daily.
        for wait in itertools.chain((1, 1, 2), itertools.repeat(CRAWL_EPOCHS)):
            with contextlib.suppress(OSError, TimeoutError, OnionmeshError):
                await self.crawl_once()
                await self.check_liveness()  # the relays just found: their heartbeats now, not next epoch
            await asyncio.sleep(self.epoch_len * wait)

    async def crawl_once(self) -> int:
        found = await self.dht.crawl()
        self.stats["crawls"] += 1
        return sum(self.items.add_descriptor(d.encode(), self.clock()) for d in found)


__all__ = ["DEFAULT_EPOCH", "DirSource"]

"""The client's directory from a few directory guards, over one-hop circuits (the default).

Why: a client that crawls the DHT tells every relay its address every 10 minutes (issue 23).
Here it talks only to its directory guards (directory.dir_guards), and on its first start to its
bootstrap contacts: a SNAPSHOT once, then each epoch a DIFF from the primary and a HEAD from each
other guard; where they disagree, SUMMARY and BUCKETs, and the view is the union of what they
sign (directory.dir_client), every descriptor verified.  A source shown to omit relays or serve
stale descriptors is replaced.  Documents travel as DIR_GET/DIR_DATA on one-hop circuits
(wire.dir_msg), as Tor's BEGIN_DIR; a guard that answers BUSY or not at all is skipped for
this epoch.

The crawl (runtime.client.directory.DhtDirectory) stays behind `--directory=crawl`, and for
bridged clients and `--dht-over-circuits`, whose crawl already goes through circuits.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable
from pathlib import Path

from onionmesh.crypto.keys import fingerprint
from onionmesh.directory import dir_list as dl
from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.directory.dir_client import DirClient
from onionmesh.directory.dir_guards import DirGuardSet
from onionmesh.errors import OnionmeshError
from onionmesh.rng import DEFAULT_RNG, Rng
from onionmesh.runtime.client.circuit_manager import CircuitHandle, CircuitMgr
from onionmesh.runtime.client.directory import DhtDirectory, local_bind_for
from onionmesh.runtime.keystore import write_secret
from onionmesh.runtime.loglimit import limited
from onionmesh.runtime.safelog import get_logger
from onionmesh.wire.dir_msg import DirData, DirGet, DirStatus, DocAssembler
from onionmesh.wire.relay_msg import RelayCommand, RelayMessage

log = limited(get_logger("onionmesh.dir_fetch"))

GUARDS_FILE = "dir-guards.json"
FETCH_TIMEOUT = 15.0
BOOTSTRAP_SOURCES = 3
TIMEOUT = None  # what _fetch returns for a source that did not answer
SETTLE_REFRESHES = 3
BUCKETS_BEFORE_SNAPSHOT = 8  # a cross-check that differs in more buckets fetches a SNAPSHOT
FIRST_VIEW_SOURCES = 3  # a first view: the union of this many sources' lists (or two that agree)
UNSETTLED_RETRY = 5.0  # seconds between refreshes while a first view has not settled


class _DirIsolation:
    """The isolation key of directory circuits: equal to no SOCKS key."""

    def __repr__(self) -> str:
        return "DIR"


DIR_ISOLATION = _DirIsolation()


class DirFetchDirectory(DhtDirectory):
    def __init__(
        self,
        data_dir: Path,
        bootstrap: list[tuple[str, int]],
        *,
        epoch_len: float = 3600.0,
        rng: Rng = DEFAULT_RNG,
        max_relays: int = 20_000,
        max_per_subnet: int = 4,
    ) -> None:
        super().__init__(
            data_dir, bootstrap, refresh=epoch_len, max_relays=max_relays, max_per_subnet=max_per_subnet
        )
        self.epoch_len = epoch_len
        self.rng = rng
        self.client = DirClient(epoch_len)
        path = self.data_dir / GUARDS_FILE
        self.guards = DirGuardSet.from_json(path.read_text() if path.exists() else "")
        self.circuits: CircuitMgr | None = None  # the directory's own, set by the node before start()
        self.entry_guards: Callable[[list[RelayDescriptor]], set[str]] = lambda relays: set()
        self.bootstrap_sources: list[RelayDescriptor] = []
        self.contacted: set[str] = set()  # relays this client reached from its own address
        self._handles: dict[str, CircuitHandle] = {}
        self._ids = itertools.cycle(range(1, 0x10000))
        self._waiters: dict[tuple[int, int], asyncio.Future[tuple[DirStatus, bytes]]] = {}
        self._assemblers: dict[int, DocAssembler] = {}
        self._refreshing = asyncio.Lock()
        # A first view is offered to path selection only once its sources agreed (or after a few
        # refreshes): the first lists of a network that is still forming are partial.
        self.settled = False
        self._refreshes = 0
        self.stats = {"docs": 0, "bytes": 0, "busy": 0, "not_found": 0, "timeouts": 0, "refused_docs": 0}
        # How a first start went: the refresh whose view was first offered, and its sources.
        self.first_view: dict[str, int] = {}

    # --- life cycle -----------------------------------------------------------------------------
    def relays(self) -> list[RelayDescriptor]:
        return super().relays() if self.settled else []

    async def start(self) -> None:
        self._load_cache()
        self.settled = len(self.view) > 0  # a cached view is usable at once, as before
        # The UDP socket asks only the bootstrap contacts to prove their IDs (first start).
        await self.dht.listen(0, local_bind_for(self.bootstrap))
        self._task = asyncio.create_task(self._refresh_loop(), name="dir-fetch-refresh")

    def _after_success_delay(self) -> float:
        """The next refresh: a random time in the middle half of the next epoch (fetches spread);
        soon while a first view has not settled."""
        if not self.settled:
            return min(self.epoch_len, UNSETTLED_RETRY)
        now = time.time()
        nxt = (int(now // self.epoch_len) + 1) * self.epoch_len
        return nxt - now + self.epoch_len * (0.25 + self.rng.randbelow(1000) / 2000)

    async def stop(self) -> None:
        await super().stop()
        if self.circuits is not None:
            self.circuits.close_all()  # the directory's own manager: its circuits and links

    # --- one-hop circuits and documents ---------------------------------------------------------
    def _on_message(self, handle: CircuitHandle, msg: RelayMessage) -> None:
        if msg.command is not RelayCommand.DIR_DATA:
            return
        assembler = self._assemblers.setdefault(handle.number, DocAssembler())
        try:
            done = assembler.feed(msg.stream_id, DirData.decode(msg.body))
        except OnionmeshError:
            done = (DirStatus.REFUSED, b"")
        if done is None:
            return
        waiter = self._waiters.pop((handle.number, msg.stream_id), None)
        if waiter is not None and not waiter.done():
            waiter.set_result(done)

    async def _circuit(self, desc: RelayDescriptor) -> CircuitHandle:
        handle = self._handles.get(desc.fingerprint)
        if handle is not None and handle.closed_reason is None and handle.built_at is not None:
            return handle
        assert self.circuits is not None, "the node sets circuits before start()"
        self.contacted.add(desc.fingerprint)
        handle = await self.circuits.build(
            path=[desc], hops=1, isolation=DIR_ISOLATION, wait_directory=False, purpose="directory"
        )
        handle.circ.handled = handle.circ.handled | {RelayCommand.DIR_DATA}
        handle.on_message = lambda msg, h=handle: self._on_message(h, msg)
        self._handles[desc.fingerprint] = handle
        return handle

    async def _fetch(self, desc: RelayDescriptor, get: DirGet) -> tuple[DirStatus | None, bytes]:
        try:
            handle = await self._circuit(desc)
        except (OSError, TimeoutError, OnionmeshError) as exc:
            log.info("no circuit to a directory source", error=type(exc).__name__)
            self.stats["timeouts"] += 1
            return TIMEOUT, b""
        rid = next(self._ids)
        key = (handle.number, rid)
        future: asyncio.Future[tuple[DirStatus, bytes]] = asyncio.get_running_loop().create_future()
        self._waiters[key] = future
        try:
            handle.circ.send_message(RelayCommand.DIR_GET, get.encode(), stream_id=rid)
            async with asyncio.timeout(FETCH_TIMEOUT):
                status, data = await future
        except (TimeoutError, OnionmeshError):
            self.stats["timeouts"] += 1
            return TIMEOUT, b""
        finally:
            self._waiters.pop(key, None)
            self._assemblers.get(handle.number, DocAssembler()).forget(rid)
        self.stats["docs"] += 1
        self.stats["bytes"] += len(data)
        if status is DirStatus.BUSY:
            self.stats["busy"] += 1
        elif status is DirStatus.NOT_FOUND:
            self.stats["not_found"] += 1
        return status, data

    # --- sources --------------------------------------------------------------------------------
    async def _bootstrap_sources(self) -> list[RelayDescriptor]:
        """The bootstrap contacts' own descriptors, each proven by the contact over UDP."""
        protocol = self.dht.protocol
        if protocol is None:
            return []
        found = await asyncio.gather(
            *(protocol.fetch_descriptor(a, None) for a in self.bootstrap[:BOOTSTRAP_SOURCES])
        )
        return [d for d in found if d is not None]

    async def _sources(self) -> list[RelayDescriptor]:
        sources = self._guard_sources(self.relays())
        if sources:
            return sources
        if not self.bootstrap_sources:
            self.bootstrap_sources = await self._bootstrap_sources()
        return list(self.bootstrap_sources)

    def _first_view_sources(
        self, sources: list[RelayDescriptor], primary: RelayDescriptor
    ) -> list[RelayDescriptor]:
        """A first start with fewer bootstrap contacts than FIRST_VIEW_SOURCES: the directory
        guards, sampled from the primary's list, cross-check it now (design §4.3 step 3, done at
        once) rather than refreshes later; they are the relays this client asks from now on anyway."""
        if len(sources) >= FIRST_VIEW_SOURCES:
            return sources
        have = {d.fingerprint for d in sources} | {primary.fingerprint}
        guards = self._guard_sources(self.client.view(time.time()))
        return sources + [d for d in guards if d.fingerprint not in have]

    def _guard_sources(self, relays: list[RelayDescriptor]) -> list[RelayDescriptor]:
        """The usable directory guards among `relays`, primary first; with too few relays for guards
        apart from the entry guards, the entry guards."""
        by_fp = {d.fingerprint: d for d in relays}
        if not by_fp:
            return []
        listed = [e.descriptor.fingerprint for e in self.client.entries()]
        entry = self.entry_guards(relays)
        sources = [by_fp[fp] for fp in self.guards.update(relays, entry, self.rng, listed) if fp in by_fp]
        return sources or [by_fp[fp] for fp in entry if fp in by_fp]

    def _update_guards(self) -> list[str]:
        relays = self.relays()
        listed = [e.descriptor.fingerprint for e in self.client.entries()]
        return self.guards.update(relays, self.entry_guards(relays), self.rng, listed)

    # --- a refresh ------------------------------------------------------------------------------
    async def refresh(self) -> int:
        """Fetch this epoch's documents; returns how many relays the view holds afterwards."""
        async with self._refreshing:  # the refresh loop and wait_for() share one DirClient
            try:
                return await self._refresh()
            finally:
                self.last_crawl = time.time()  # an attempt that found nothing counts (status, as the crawl)

    async def _refresh(self) -> int:
        sources = await self._sources()
        if not sources:
            raise OSError("no directory source reachable")
        primary = await self._refresh_primary(sources)
        if primary is None and self.bootstrap:
            # None of them answered (a cached view whose relays moved, say): the bootstrap contacts
            # again, their descriptors proven afresh.
            self.bootstrap_sources = await self._bootstrap_sources()
            sources = list(self.bootstrap_sources)
            primary = await self._refresh_primary(sources)
        if primary is None:
            raise OSError("no directory source gave a usable list")
        if not self.settled:
            sources = self._first_view_sources(sources, primary)
        for desc in sources:
            if desc is not primary:
                await self._cross_check(desc)
        r = self.client.round
        agreed = r is not None and bool(r.heads) and not r.disagreeing()  # two sources at least
        # A first view is usable once two sources agree, or once it is the union of three sources'
        # lists (design §4.3); with fewer sources than that, after SETTLE_REFRESHES refreshes.
        agreed = agreed or (r is not None and len(r.heads) + 1 >= FIRST_VIEW_SOURCES)
        evidence = self.client.finish()
        for ev in evidence:
            log.info(
                "a directory source contradicted the others", what=ev.what, source=fingerprint(ev.source)
            )
        for pk in self.client.bad_sources():
            fp = fingerprint(pk)
            if fp in self.guards.sampled or fp == primary.fingerprint:
                self.guards.mark_bad(fp)
                log.warning("directory guard replaced: it lied", source=fp)
            if pk == self.client.primary:
                self.client.forget_primary()
        self.bootstrap_sources = [d for d in self.bootstrap_sources if d.fingerprint not in self.guards.bad]
        self._refreshes += 1
        if not self.settled and (agreed or self._refreshes >= SETTLE_REFRESHES):
            self.settled = True
            self.first_view = {"refresh": self._refreshes, "sources": 1 + len(r.heads) if r else 1}
        now = time.time()
        view = self.client.view(now)
        self.view.merge(view, now)
        self._update_guards()
        self.last_found = len(view)
        self.last_crawl = now
        self._save_cache()
        with contextlib.suppress(OSError):
            write_secret(self.data_dir / GUARDS_FILE, self.guards.to_json().encode())
        if self.settled:
            self.crawled.set()
        log.info("directory refreshed", relays=len(self.view), sources=len(sources))
        return len(self.view)

    async def _refresh_primary(self, sources: list[RelayDescriptor]) -> RelayDescriptor | None:
        for desc in sources:
            pk = desc.identity_pk
            get = self.client.primary_request(pk)
            status, data = await self._fetch(desc, get)
            if status is DirStatus.NOT_FOUND and get.kind == dl.Kind.DIFF:
                status, data = await self._fetch(desc, DirGet(dl.Kind.SNAPSHOT))
            if status is not DirStatus.OK:
                continue
            try:
                self.client.on_primary(pk, data, time.time())
            except OnionmeshError as exc:
                self.stats["refused_docs"] += 1
                log.info("directory document refused", error=type(exc).__name__)
                self.client.forget_primary()
                continue
            return desc
        return None

    async def _cross_check(self, desc: RelayDescriptor) -> None:
        pk = desc.identity_pk
        status, data = await self._fetch(desc, self.client.head_request())
        if status is not DirStatus.OK:
            return
        try:
            if self.client.add_head(pk, data):
                return
            status, data = await self._fetch(desc, self.client.summary_request())
            if status is not DirStatus.OK:
                return
            missing = self.client.add_summary(pk, data)
            if len(missing) > BUCKETS_BEFORE_SNAPSHOT and (get := self.client.other_request(pk)):
                status, data = await self._fetch(desc, get)
                if status is DirStatus.OK:
                    with contextlib.suppress(OnionmeshError):
                        self.client.add_other_diff(pk, data, time.time())
                        return
            if len(missing) > BUCKETS_BEFORE_SNAPSHOT:
                # More than its per-circuit budget of DIR_GETs would serve (every epoch the same
                # first buckets, never the rest): its whole list in one SNAPSHOT instead.
                status, data = await self._fetch(desc, DirGet(dl.Kind.SNAPSHOT))
                if status is DirStatus.OK:
                    self.client.add_snapshot(pk, data, time.time())
                    return
            for bucket in missing:
                status, data = await self._fetch(desc, self.client.bucket_request(bucket))
                if status is not DirStatus.OK:
                    return
                self.client.add_bucket(pk, data, time.time())
        except OnionmeshError as exc:
            self.stats["refused_docs"] += 1
            log.info("directory document refused", error=type(exc).__name__)

    async def wait_for(self, relays: int, timeout: float) -> int:
        """Refresh until the view holds at least `relays` relays or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while len(self.relays()) < relays and time.monotonic() < deadline:
            with contextlib.suppress(OSError, TimeoutError, OnionmeshError):
                await self.refresh()
            if len(self.relays()) < relays:
                await asyncio.sleep(min(1.0, self.epoch_len / 4))
        return len(self.relays())


__all__ = ["DIR_ISOLATION", "DirFetchDirectory"]

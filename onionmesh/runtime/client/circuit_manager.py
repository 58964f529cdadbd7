"""The client's circuits: building them over links, carrying their cells, reusing and closing them.

`CircuitMgr` owns the links to first hops (a `transport.link_manager.LinkManager`, as a relay's
switch does) and every `ClientCircuit`; it is the links' owner.  Each circuit sits in its
link's table as a `CircuitSlot` whose link pulls the cells the circuit queues.  Streams are opened on
an open circuit whose exit may accept the port and whose isolation key (the SOCKS
username/password) matches, the one already in use first (as Tor); concurrent requests share a
circuit being built.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable

from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.errors import DirectoryError, OnionmeshError
from onionmesh.proto.client_circuit import ClientCircuit
from onionmesh.proto.dht_events import DhtAnswerReceived
from onionmesh.proto.events import (
    BeginRequested,
    CircuitExtended,
    DatagramReceived,
    MessageForHandler,
    SendWindowOpened,
    StreamConnected,
    StreamDataReceived,
    StreamEnded,
    StreamResolved,
)
from onionmesh.proto.scheduler import QueueBudget
from onionmesh.rng import DEFAULT_RNG, Rng
from onionmesh.runtime.client.bridges import BridgeSet
from onionmesh.runtime.client.circuit_build import (
    MEASURE_PURPOSE,
    choose_path,
    extend_all,
    keep_measuring,
    wait_build,
)
from onionmesh.runtime.client.circuit_handle import (
    MAX_DIRTINESS,
    MAX_STREAMS_PER_CIRCUIT_SOFT,
    NO_ISOLATION,
    CircuitHandle,
    StreamFailed,
)
from onionmesh.runtime.client.circuit_streams import CircuitStreams
from onionmesh.runtime.client.path_policy import PathPolicy
from onionmesh.runtime.loglimit import limited
from onionmesh.runtime.safelog import get_logger
from onionmesh.runtime.transport import memory_guard as oom
from onionmesh.runtime.transport.link import CircuitSlot, Link, LinkLimits
from onionmesh.runtime.transport.link_manager import LinkManager
from onionmesh.runtime.transport.link_setup import open_link
from onionmesh.wire.cell import Cell, CellCommand, DestroyReason
from onionmesh.wire.relay_msg import EndReason

log = get_logger("onionmesh.circuits")
bug_log = limited(log)  # a listener that fails on every event must not fill the disk

DIRECTORY_WAIT = 30.0
MAX_IDLE = 3600.0  # an unused clean circuit is closed after an hour (Tor's CircuitIdleTimeout)


def _preference(handle: CircuitHandle) -> tuple[int, float]:
    """Which usable circuit takes a new stream: the one that took its first stream most recently,
    else the newest clean one (Tor's circuit_is_better).  A user's streams stay on one circuit
    until it is too dirty: fewer exits see any of them, clean circuits stay ready for other ports
    and isolation keys, and streams on one circuit take turns at its window, which streams spread
    over circuits of different paths cannot (200 streams over 2-3 circuits: some finished in
    half the time of others)."""
    if handle.dirty_since is not None:
        return 0, -handle.dirty_since
    return 1, -(handle.built_at or handle.created_at)


ClientLink = Link[CircuitHandle]


class CircuitMgr:
    def __init__(
        self,
        relays: Callable[[], list[RelayDescriptor]],
        rng: Rng = DEFAULT_RNG,
        hops: int = 3,
        policy: PathPolicy | None = None,
    ) -> None:
        self.relays = relays
        self.rng = rng
        self.hops = hops
        self.policy = policy or PathPolicy(None, rng)
        self.ports_seen: dict[int, float] = {}  # destination port -> last request (for pre-building)
        self.directory_ready: asyncio.Event | None = None  # set once the first directory crawl is done
        self.newnym_exits: set[str] = set()
        self.circuits: dict[int, CircuitHandle] = {}
        self._numbers = itertools.count(1)
        self._building: list[tuple[object, int | None, asyncio.Task[CircuitHandle]]] = []
        self.listeners: list[Callable[[str, CircuitHandle], None]] = []
        self.stream_listeners: list[Callable[[str, CircuitHandle, int], None]] = []
        self.closed_bytes = [0, 0]  # bytes in/out of circuits already closed, for running totals
        self.listener_errors = 0  # exceptions raised by listeners (control API, status page)
        budget = QueueBudget(oom.DEFAULT_MAX_MEM_IN_QUEUES)
        self.links: LinkManager[CircuitHandle] = LinkManager(LinkLimits(budget))
        self.memory = oom.MemoryGuard(
            budget,
            lambda: self.links.links,
            lambda: [(h, h.pumps.values()) for h in list(self.circuits.values())],
            self.links.circuit_of,  # type: ignore[arg-type]  # Hashable: handles hash by identity
            lambda h: self._close(h, "out of memory for queues"),  # type: ignore[arg-type]
        )
        self.streams = CircuitStreams(self._emit_stream)
        # Bridges (runtime.client.bridges): hop 1 of every circuit, reached over WebSocket; and where the
        # answers of DHT RPCs sent over circuits go (runtime.client.dht_over_circuits).
        self.first_hops: BridgeSet | None = None
        self.dht_answers: Callable[[CircuitHandle, DhtAnswerReceived], None] | None = None
        self.clock: Callable[[], float] = time.monotonic  # times builds (a test gives a virtual one)
        self._measuring: set[asyncio.Task[None]] = set()  # builds kept past their timeout

    @property
    def limits(self) -> LinkLimits:
        return self.links.limits

    # --- links ---------------------------------------------------------------------------------
    async def link_to_bridge(self, identity_pk: bytes) -> ClientLink:
        """A link to one of our bridges, shared like any first hop's link."""
        first_hops = self.first_hops
        assert first_hops is not None
        return await self.links.get_or_open(identity_pk, lambda: first_hops.open_link(self, identity_pk))

    async def _link_to(self, desc: RelayDescriptor) -> ClientLink:
        if self.first_hops is not None and self.first_hops.owns(desc.identity_pk):
            return await self.link_to_bridge(desc.identity_pk)

        async def opener() -> ClientLink:
            error: Exception = OSError("relay has no address")
            for host, port in desc.link_addresses:
                try:
                    return await open_link(host, port, desc.identity_pk, self, self.rng, limits=self.limits)
                except (OSError, OnionmeshError) as exc:
                    error = exc
            raise OSError(f"cannot reach first hop: {error}")

        return await self.links.get_or_open(desc.identity_pk, opener)

    def link_closed(self, link: ClientLink) -> None:
        for handle in self.links.closed(link):
            self._close(handle, "link closed", send_destroy=False)

    def circuit_overflowed(self, slot: CircuitSlot[CircuitHandle]) -> None:
        self._close(slot.circuit, "circuit queue full")

    def budget_exceeded(self) -> None:
        self.reclaim_memory()

    # --- building ------------------------------------------------------------------------------
    def _emit(self, what: str, handle: CircuitHandle) -> None:
        for listener in self.listeners:
            try:
                listener(what, handle)
            except Exception as exc:  # a listener's bug must not stop the circuits: log it, count it
                self._listener_failed(exc)

    def _emit_stream(self, what: str, handle: CircuitHandle, stream_id: int) -> None:
        for listener in self.stream_listeners:
            try:
                listener(what, handle, stream_id)
            except Exception as exc:  # as in _emit
                self._listener_failed(exc)

    def _listener_failed(self, exc: Exception) -> None:
        self.listener_errors += 1
        bug_log.warning("circuit event listener failed", error=type(exc).__name__)

    def totals(self) -> tuple[int, int]:
        """Bytes carried in and out by all circuits, open and closed."""
        live_in = sum(h.circ.bytes_in for h in self.circuits.values())
        live_out = sum(h.circ.bytes_out for h in self.circuits.values())
        return self.closed_bytes[0] + live_in, self.closed_bytes[1] + live_out

    async def build(
        self,
        *,
        port: int | None = None,
        isolation: object = NO_ISOLATION,
        hops: int | None = None,
        exit_fp: str | None = None,
        via: list[str] | None = None,
        avoid: set[str] | None = None,
        progress: Callable[[int, float], None] | None = None,
        wait_directory: bool = True,
        path: list[RelayDescriptor] | None = None,
        purpose: str = "general",
        hs_service_id: str | None = None,
    ) -> CircuitHandle:
        """Build a circuit hop by hop; raises OnionmeshError/OSError/TimeoutError when it fails.

        The path comes from the policy (guards, bandwidth weights, relays to avoid).  Past the
        learned build timeout the caller gets TimeoutError, while the build goes on as a
        measurement until the close timeout (runtime.client.circuit_build).
        """
        if wait_directory and not self.relays() and self.directory_ready is not None:
            # A request that arrives before the first crawl waits for it (bounded), rather than failing.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DIRECTORY_WAIT):  # wait_for (3.11) may lose a cancel
                    await self.directory_ready.wait()
        if path is None:  # onion-service circuits come with their vanguards path (directory.vanguards)
            path = await choose_path(self, port, isolation, hops, exit_fp, via, avoid)
        clock = self.clock
        start = clock()
        try:
            link = await self._link_to(path[0])
        except OSError:
            self.policy.build_failed(path, 0, timed_out=False)
            raise
        cid = link.allocate_circ_id()
        circ = ClientCircuit(cid, self.rng, clock)
        handle = CircuitHandle(next(self._numbers), circ, link, path, isolation)  # enters link.circuits
        handle.purpose, handle.hs_service_id = purpose, hs_service_id
        self.circuits[handle.number] = handle
        self._emit("launched", handle)
        timeout, close = self.policy.build_timeouts()
        work = asyncio.create_task(extend_all(handle, progress, self._emit, clock), name="circuit-extend")
        try:
            await wait_build(work, timeout)
        except TimeoutError:
            # Not abandoned: measured until the close timeout (runtime.client.circuit_build).
            handle.purpose = MEASURE_PURPOSE
            measuring = keep_measuring(
                handle, work, start, close, clock, self.policy, self._close, self._emit
            )
            task = asyncio.create_task(measuring, name="circuit-measure")
            self._measuring.add(task)
            task.add_done_callback(self._measuring.discard)
            raise
        except (OnionmeshError, OSError) as exc:
            self.policy.build_failed(path, len(handle.hop_times), timed_out=False)
            self._close(handle, f"build failed: {type(exc).__name__}")
            self._emit("failed", handle)
            raise
        handle.built_at = clock()
        self.policy.built(path, handle.built_at - start, learn=len(path) >= self.hops)
        self.newnym_exits.discard(path[-1].fingerprint)
        log.debug("circuit built", number=handle.number, ms=round((handle.built_at - start) * 1000, 1))
        self._emit("built", handle)
        return handle

    async def extend(self, handle: CircuitHandle, desc: RelayDescriptor) -> None:
        """Add one hop to a built, idle circuit (an onion-service circuit taken from the pre-built
        pool, runtime.client.hs_pool); on failure the hop is blamed and the circuit closed."""
        handle.path.append(desc)
        try:
            async with asyncio.timeout(self.policy.build_timeout()):
                await extend_all(handle, None, self._emit, self.clock, start=len(handle.path) - 1)
        except (OnionmeshError, OSError, TimeoutError) as exc:
            timed_out = isinstance(exc, TimeoutError)
            self.policy.build_failed(handle.path, len(handle.hop_times), timed_out=timed_out)
            self._close(handle, f"extend failed: {type(exc).__name__}")
            raise

    async def get_circuit(self, port: int | None, isolation: object) -> CircuitHandle:
        """An open circuit for this port and isolation key, sharing one being built if any."""
        now = time.monotonic()
        usable = [h for h in self.circuits.values() if h.usable_for(port, isolation, now)]
        if usable:
            return min(usable, key=_preference)
        for iso, want_port, task in self._building:
            if iso == isolation and want_port == port and not task.done():
                with contextlib.suppress(OnionmeshError, OSError, TimeoutError):
                    return await asyncio.shield(task)
        task = asyncio.create_task(self.build(port=port, isolation=isolation), name="circuit-build")
        # Concurrent requests for the same port and isolation wait for this build, not start their own.
        self._building.append((isolation, port, task))
        try:
            return await asyncio.shield(task)
        finally:
            self._building = [b for b in self._building if not b[2].done()]

    # --- cells ---------------------------------------------------------------------------------
    def reclaim_memory(self) -> None:
        """The OOM policy (as a relay's): close the circuits with the oldest queued data."""
        self._after_reclaim(self.memory.reclaim())

    def _after_reclaim(self, killed: int) -> None:
        if killed:
            log.warning("out of memory for queues: closed the stalest circuits", circuits=killed)

    def cell_received(self, link: ClientLink, cell: Cell) -> None:
        slot = link.circuits.get(cell.circ_id)
        if slot is None:
            return
        handle = slot.circuit
        if cell.command is CellCommand.DESTROY:
            self._close(
                handle, f"destroyed by relay ({DestroyReason.of(cell.payload[0]).name})", send_destroy=False
            )
            return
        try:
            handle.circ.handle_cell(cell)
        except OnionmeshError as exc:
            log.info("circuit destroyed: protocol violation", number=handle.number, detail=str(exc))
            self._close(handle, "protocol violation")
            return
        if handle.circ.events:
            self._dispatch(handle)

    def _dispatch(self, handle: CircuitHandle) -> None:
        for event in handle.circ.take_events():
            match event:
                case CircuitExtended():
                    handle.extended.set()
                case DatagramReceived() if handle.udp is not None:  # UDP flows (client.socks_udp)
                    handle.udp.route(handle, event)
                case StreamEnded(sid) if handle.udp is not None and handle.udp.owns(handle, sid):
                    handle.udp.route(handle, event)
                case StreamConnected(sid) | StreamResolved(sid) if sid in handle.pending:
                    waiter = handle.pending.pop(sid)
                    if not waiter.done():
                        waiter.set_result(event)
                        if isinstance(event, StreamConnected):
                            handle.unattached[sid] = []
                case StreamDataReceived(sid) | SendWindowOpened(sid) | StreamEnded(sid) if (
                    sid in handle.unattached
                ):
                    handle.unattached[sid].append(event)
                case StreamEnded(sid, reason) if sid in handle.pending:
                    waiter = handle.pending.pop(sid)
                    if not waiter.done():
                        waiter.set_exception(StreamFailed(reason))
                case StreamDataReceived() | SendWindowOpened() | StreamEnded():
                    handle.pumps.route(event)
                    if handle.udp is not None and isinstance(event, SendWindowOpened):
                        handle.udp.route(handle, event)
                case DhtAnswerReceived():
                    if self.dht_answers is not None:
                        self.dht_answers(handle, event)
                case MessageForHandler(message) if handle.on_message is not None:
                    handle.on_message(message)
                case BeginRequested() if handle.on_begin is not None:
                    handle.on_begin(event)
                case _:
                    pass  # CONNECTED or RESOLVED for a request already given up (timed out)

    def _close(self, handle: CircuitHandle, reason: str, *, send_destroy: bool = True) -> None:
        if handle.closed_reason is not None:
            return
        handle.closed_reason = reason
        if handle.slot is not None:
            attached = handle.slot.attached
            handle.slot.detach(DestroyReason.REQUESTED if send_destroy and attached else None)
        handle.circ.mark_closed()
        handle.circ.take_events()
        for waiter in handle.pending.values():
            if not waiter.done():
                waiter.set_exception(StreamFailed(EndReason.DESTROY))
        handle.pending.clear()
        handle.pumps.close_all(remote=True)
        handle.unattached.clear()
        if handle.udp is not None:
            handle.udp.circuit_closed(handle)
        handle.extended.set()
        if self.circuits.pop(handle.number, None) is not None:
            self.closed_bytes[0] += handle.circ.bytes_in
            self.closed_bytes[1] += handle.circ.bytes_out
        self._emit("closed", handle)

    def close_circuit(self, number: int) -> bool:
        handle = self.circuits.get(number)
        if handle is None:
            return False
        self._close(handle, "closed by user")
        return True

    def close_all(self) -> None:
        for task in list(self._measuring):
            task.cancel()
        for handle in list(self.circuits.values()):
            self._close(handle, "shutting down")
        self.links.close_all()

    def retire_all(self) -> None:
        """New identity (Tor's NEWNYM): no current circuit takes new streams, and the next circuits
        avoid their exits while others exist; old circuits close when their streams end."""
        for handle in self.circuits.values():
            handle.dirty_since = -MAX_DIRTINESS * 2
            self.newnym_exits.add(handle.exit.fingerprint)

    def maintain(self, now: float) -> None:
        """Close retired circuits whose streams are done, and clean ones idle for too long; and
        apply the memory limit to SOCKS buffers, which grow without passing through a queue."""
        self._after_reclaim(self.memory.check())
        for handle in list(self.circuits.values()):
            if handle.built_at is None or handle.circ.streams or handle.pending:
                continue
            if handle.purpose != "general":
                continue  # onion-service circuits live as long as their service or connector keeps them
            expired = handle.dirty_since is not None and now - handle.dirty_since >= MAX_DIRTINESS
            idle = handle.dirty_since is None and now - handle.built_at >= MAX_IDLE
            if expired or idle:
                self._close(handle, "retired")


__all__ = [
    "MAX_DIRTINESS",
    "MAX_STREAMS_PER_CIRCUIT_SOFT",
    "NO_ISOLATION",
    "CircuitHandle",
    "CircuitMgr",
    "DirectoryError",
    "StreamFailed",
]

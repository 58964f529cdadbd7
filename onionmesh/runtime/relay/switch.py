"""What a relay does with cells: answer CREATE, forward and recognize relay cells, extend
circuits, hand streams to the exit, tear down, and keep queued memory under its limit.

`RelayNode` (runtime/relay/node.py) is a `CircuitSwitch` that also owns the relay's life: keys,
listeners, links, its descriptor.  The per-circuit crypto and parsing is
`proto.relay_circuit.RelayCircuit`'s; here is which link a circuit continues on, the cell queues
it fills, and teardown.  One bad peer can only ever destroy its own circuits or close its own
link.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from onionmesh.crypto import ntor
from onionmesh.errors import OnionmeshError, RemoteProtocolError
from onionmesh.proto.dht_events import DhtRpcRequested
from onionmesh.proto.events import BeginRequested, ExtendRequested, ResolveRequested
from onionmesh.proto.relay_circuit import RelayCircuit
from onionmesh.proto.scheduler import QueueBudget
from onionmesh.runtime.loglimit import limited
from onionmesh.runtime.ratelimit import TokenBuckets
from onionmesh.runtime.relay import bridge as bridge_relay
from onionmesh.runtime.safelog import get_logger
from onionmesh.runtime.transport import memory_guard as oom
from onionmesh.runtime.transport.link import HANDSHAKE_TIMEOUT, Link, LinkLimits
from onionmesh.runtime.transport.stream_pump import StreamPump, route_stream_event
from onionmesh.wire.cell import (
    Cell,
    CellCommand,
    DestroyReason,
    create_payload,
    created_payload,
    destroy_payload,
    parse_create,
    parse_created,
)
from onionmesh.wire.relay_msg import Extend

if TYPE_CHECKING:
    from onionmesh.runtime.keystore import KeyStore
    from onionmesh.runtime.relay.dht_answers import DhtRpcService
    from onionmesh.runtime.relay.exit_streams import ExitService

log = limited(get_logger("onionmesh.relay"))  # peers cause these lines: rate-limited (runtime.loglimit)

MAX_CIRCUITS_PER_LINK = 4096
CREATE_RATE = 50.0  # circuit handshakes per second per link (each costs two X25519 operations) ...
CREATE_BURST = 100.0  # ... with this burst; the excess gets DESTROY(RESOURCELIMIT) before any crypto


class Side(enum.Enum):
    FROM_PREV = "prev"  # cells on this link travel away from the client
    FROM_NEXT = "next"  # cells on this link travel toward the client


@dataclass(eq=False)
class CircuitEntry:
    circ: RelayCircuit
    prev: Link
    prev_id: int
    next: Link | None = None
    next_id: int = 0
    created_waiter: asyncio.Future[bytes] | None = None
    bridges: dict[int, StreamPump] = field(default_factory=dict)
    dead: bool = False


class CircuitSwitch:
    """Circuits across a relay's links.  The subclass provides `keys`, `rng`, `config`,
    `links`, `descriptor`, `exit_service`, `dht_rpc` and `_link_to`."""

    keys: KeyStore
    rng: Any
    config: Any
    links: set[Link]
    descriptor: Any
    exit_service: ExitService
    dht_rpc: DhtRpcService

    def __init__(self, budget: QueueBudget) -> None:
        self.limits = LinkLimits(budget)
        self.memory = oom.MemoryGuard(
            budget,
            lambda: self.links,
            self._exit_streams,
            lambda link, cid: (link.circuits.get(cid) or (None,))[0],  # type: ignore[index]
            lambda entry: self._destroy(entry, DestroyReason.RESOURCELIMIT),  # type: ignore[arg-type]
        )
        self.stats: dict[str, int] = {"circuits": 0, "destroyed_protocol": 0}
        self._tasks: set[asyncio.Task[None]] = set()
        self._create_budget = TokenBuckets(CREATE_RATE, CREATE_BURST, 65536)

    async def _link_to(self, addresses: tuple[tuple[str, int], ...], identity_pk: bytes) -> Link:
        raise NotImplementedError

    def _count(self, name: str, n: int = 1) -> None:
        self.stats[name] = self.stats.get(name, 0) + n

    def _spawn(self, coro: object, name: str) -> None:
        task = asyncio.create_task(coro, name=name)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("relay task failed", task=task.get_name(), error=type(task.exception()).__name__)

    # --- cells ---------------------------------------------------------------------------------
    def cell_received(self, link: Link, cell: Cell) -> None:
        if cell.command is CellCommand.CREATE:
            self._on_create(link, cell)
            return
        if cell.command is CellCommand.DESCRIPTOR_GET and cell.circ_id == 0:
            bridge_relay.send_descriptor(link, self.descriptor.encode() if self.descriptor else None)
            return
        record = link.circuits.get(cell.circ_id)
        if record is None:
            self._count("cells_dropped")
            return  # a cell for a circuit that is gone; dropped, as Tor does
        entry, side = record  # type: ignore[misc]
        try:
            if cell.command is CellCommand.DESTROY:
                self._destroy(entry, DestroyReason.of(cell.payload[0]), came_from=link)
            elif cell.command is CellCommand.CREATED and side is Side.FROM_NEXT:
                if entry.created_waiter is not None and not entry.created_waiter.done():
                    entry.created_waiter.set_result(cell.payload)
            elif cell.command in (CellCommand.RELAY, CellCommand.RELAY_EARLY):
                if side is Side.FROM_PREV:
                    entry.circ.handle_forward(cell.command, cell.payload)
                elif cell.command is CellCommand.RELAY_EARLY:
                    raise RemoteProtocolError("RELAY_EARLY toward the client")
                else:
                    entry.circ.handle_backward(cell.payload)
                self._after(entry)
            else:
                raise RemoteProtocolError(f"unexpected {cell.command.name}")
        except OnionmeshError as exc:
            log.info("circuit destroyed: protocol violation", detail=str(exc))
            self.stats["destroyed_protocol"] += 1
            self._destroy(entry, DestroyReason.PROTOCOL)

    def _on_create(self, link: Link, cell: Cell) -> None:
        cid = cell.circ_id
        if not self._create_budget.allow(str(id(link)), time.monotonic()):
            self._count("creates_refused")
            link.send_cell(Cell(cid, CellCommand.DESTROY, destroy_payload(DestroyReason.RESOURCELIMIT)))
            return
        if not link.peer_may_use(cid) or cid in link.circuits or len(link.circuits) >= MAX_CIRCUITS_PER_LINK:
            if cid not in link.circuits:
                link.send_cell(Cell(cid, CellCommand.DESTROY, destroy_payload(DestroyReason.RESOURCELIMIT)))
            return
        try:
            htype, hdata = parse_create(cell.payload)  # a type we do not run: server_respond refuses it
            skin = ntor.parse_onionskin(hdata)
            secret = self.keys.onion_secret_for(skin.onion_pk)
            if secret is None:
                raise RemoteProtocolError("onionskin for an onion key we do not hold")
            reply, keys = ntor.server_respond(skin, self.keys.identity.public, secret, self.rng, htype)
        except OnionmeshError as exc:
            self._count("handshakes_failed")
            log.info("CREATE refused", detail=str(exc))
            link.send_cell(Cell(cid, CellCommand.DESTROY, destroy_payload(DestroyReason.PROTOCOL)))
            return
        entry = CircuitEntry(RelayCircuit(keys, self.rng, time.monotonic), prev=link, prev_id=cid)
        link.circuits[cid] = (entry, Side.FROM_PREV)
        self.stats["circuits"] += 1
        self._count("handshakes_ok")
        link.send_cell(Cell(cid, CellCommand.CREATED, created_payload(reply)))

    def _flush(self, entry: CircuitEntry) -> None:
        circ = entry.circ
        if entry.dead:
            circ.take_forward()
            circ.take_backward()
            return
        fits = True
        if entry.next is not None:
            for command, payload in circ.take_forward():
                fits &= entry.next.send_cell(Cell(entry.next_id, command, payload))
        for payload in circ.take_backward():
            fits &= entry.prev.send_cell(Cell(entry.prev_id, CellCommand.RELAY, payload))
        if not fits:  # a circuit queue at its cap: an end is ignoring flow control
            self._count("destroyed_queue_full")
            self._destroy(entry, DestroyReason.RESOURCELIMIT)
        elif self.memory.budget.over():
            self.reclaim_memory()

    def _after(self, entry: CircuitEntry) -> None:
        for event in entry.circ.take_events():
            if route_stream_event(entry.bridges, event):
                continue
            if isinstance(event, ExtendRequested):
                self._spawn(self._extend(entry, event.extend), "relay-extend")
            elif isinstance(event, BeginRequested):
                self._spawn(self.exit_service.begin(entry, event), "exit-begin")
            elif isinstance(event, ResolveRequested):
                self._spawn(self.exit_service.resolve(entry, event), "exit-resolve")
            elif isinstance(event, DhtRpcRequested):
                self._spawn(self._dht_rpc(entry, event), "dht-rpc")
        self._flush(entry)

    def _destroy(self, entry: CircuitEntry, reason: DestroyReason, came_from: Link | None = None) -> None:
        if entry.dead:
            return
        entry.dead = True
        for link, cid in ((entry.prev, entry.prev_id), (entry.next, entry.next_id)):
            if link is None:
                continue
            link.forget_circuit(cid)
            if link is not came_from and not link.closed:
                link.send_cell(Cell(cid, CellCommand.DESTROY, destroy_payload(reason)))
        for bridge in entry.bridges.values():
            bridge.close()
        entry.bridges.clear()
        if entry.created_waiter is not None and not entry.created_waiter.done():
            entry.created_waiter.cancel()

    # --- memory ---------------------------------------------------------------------------------
    def _exit_streams(self) -> list[tuple[CircuitEntry, Iterable[StreamPump]]]:
        """(circuit, its exit streams): an exit's circuit is on its previous link only."""
        return [
            (entry, entry.bridges.values())
            for link in list(self.links)
            for entry, side in list(link.circuits.values())  # type: ignore[misc]
            if side is Side.FROM_PREV
        ]

    def queued_bytes(self) -> int:
        """Circuit queues plus exit streams' buffers: what MaxMemInQueues limits."""
        return self.memory.queued_bytes()

    def reclaim_memory(self) -> None:
        """The OOM policy: destroy the circuits with the oldest queued data until back under 90%."""
        self._after_reclaim(self.memory.reclaim())

    def _after_reclaim(self, killed: int) -> None:
        if killed:
            self._count("destroyed_oom", killed)
            log.warning("out of memory for queues: destroyed the stalest circuits", circuits=killed)

    async def _memory_watch(self) -> None:
        """Stream buffers grow without passing through a circuit queue: look at the total each second."""
        while True:
            await asyncio.sleep(1.0)
            self._after_reclaim(self.memory.check())

    # --- what circuits ask of the world --------------------------------------------------------
    async def _dht_rpc(self, entry: CircuitEntry, event: DhtRpcRequested) -> None:
        bodies = await self.dht_rpc.answer(entry, event)
        if not entry.dead:
            entry.circ.dht_answer(event.request_id, bodies)
            self._flush(entry)

    async def _extend(self, entry: CircuitEntry, extend: Extend) -> None:
        try:
            if extend.identity_pk == self.keys.identity.public:
                raise OSError("extend to ourselves")
            link = await self._link_to(extend.addresses, extend.identity_pk)
            if entry.dead:
                return
            cid = link.allocate_circ_id()
            entry.next, entry.next_id = link, cid
            entry.created_waiter = asyncio.get_running_loop().create_future()
            link.circuits[cid] = (entry, Side.FROM_NEXT)
            link.send_cell(
                Cell(cid, CellCommand.CREATE, create_payload(extend.handshake_type, extend.onionskin))
            )
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                payload = await entry.created_waiter
            reply = parse_created(payload)
        except (OSError, TimeoutError, asyncio.CancelledError, OnionmeshError) as exc:
            if entry.dead:
                return
            log.info("extend failed", error=type(exc).__name__)
            if entry.next is not None:
                entry.next.circuits.pop(entry.next_id, None)
                entry.next = None
            entry.circ.extend_failed(DestroyReason.CONNECTFAILED)
            self._flush(entry)
            return
        if not entry.dead:
            entry.circ.extended(reply)
            self._flush(entry)

"""What a relay does with cells: answer CREATE, forward and recognize relay cells, extend
circuits, hand what terminates here to its handler, tear down, keep queued memory under its limit.

`RelayNode` (runtime/relay/node.py) owns a `CircuitSwitch` and gives it what it needs (keys,
the exit, DHT answers, a way to reach the next relay); the switch is the owner of every link
(`LinkOwner`).  The per-circuit crypto and parsing is `proto.relay_circuit.RelayCircuit`'s;
here is which link a circuit continues on and teardown.  Output is pulled by the links
(`transport.link.CircuitSlot`): nothing here flushes.

Messages that terminate at this hop go to handlers: the built-in ones (EXTEND, BEGIN, RESOLVE,
DHT_RPC) are matched on their event type; any other command goes to `handlers[command]`, so a
new relay role (a rendezvous point joining two circuits with `circuit_entry.Join`, an
introduction point) registers a handler and touches neither this module nor the forwarding path.
One bad peer can only ever destroy its own circuits or close its own link.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

from onionmesh.crypto import ntor
from onionmesh.errors import OnionmeshError, RemoteProtocolError
from onionmesh.proto.dht_events import DhtRpcRequested
from onionmesh.proto.events import (
    BeginRequested,
    DatagramReceived,
    ExtendRequested,
    MessageForHandler,
    ResolveRequested,
    SendWindowOpened,
    StreamDataReceived,
    StreamEnded,
    UdpConnectRequested,
)
from onionmesh.proto.relay_circuit import RelayCircuit
from onionmesh.proto.scheduler import QueueBudget
from onionmesh.rng import Rng
from onionmesh.runtime.keystore import KeyStore
from onionmesh.runtime.loglimit import limited
from onionmesh.runtime.ratelimit import TokenBuckets
from onionmesh.runtime.relay import bridge as bridge_relay
from onionmesh.runtime.relay.circuit_entry import LinkOnward, RelayCircuitEntry
from onionmesh.runtime.relay.dht_answers import DhtRpcService
from onionmesh.runtime.relay.exit_limits import StreamCaps, StreamLedger
from onionmesh.runtime.relay.exit_streams import ExitService
from onionmesh.runtime.relay.exit_udp import UdpExit
from onionmesh.runtime.relay.peer_bytes import PeerBytes
from onionmesh.runtime.safelog import get_logger
from onionmesh.runtime.transport import memory_guard as oom
from onionmesh.runtime.transport.link import HANDSHAKE_TIMEOUT, CircuitSlot, Link, LinkLimits
from onionmesh.runtime.transport.link_manager import LinkManager
from onionmesh.runtime.transport.stream_pump import StreamPump
from onionmesh.wire.cell import (
    CELL_LEN,
    Cell,
    CellCommand,
    DestroyReason,
    create_payload,
    created_payload,
    destroy_payload,
    parse_create,
    parse_created,
)
from onionmesh.wire.relay_msg import Extend, RelayCommand, RelayMessage

log = limited(get_logger("onionmesh.relay"))  # peers cause these lines: rate-limited (runtime.loglimit)

MAX_CIRCUITS_PER_LINK = 4096
CREATE_RATE = 50.0  # circuit handshakes per second per link (each costs two X25519 operations) ...
CREATE_BURST = 100.0  # ... with this burst; the excess gets DESTROY(RESOURCELIMIT) before any crypto

RelayLink = Link[RelayCircuitEntry]
# A handler for a message that terminates here: the circuit it arrived on and the message.  It may
# answer on the circuit, join it to another (circuit_entry.Join) or raise RemoteProtocolError.
Handler = Callable[[RelayCircuitEntry, RelayMessage], None]
LinkTo = Callable[[tuple[tuple[str, int], ...], bytes], Awaitable[RelayLink]]


class CircuitSwitch:
    """Circuits across a relay's links."""

    def __init__(
        self,
        keys: KeyStore,
        rng: Rng,
        budget: QueueBudget,
        exit_service: ExitService,
        dht_rpc: DhtRpcService,
        descriptor: Callable[[], bytes | None],
        link_to: LinkTo,
        on_link_closed: Callable[[RelayLink], None],
        stats: dict[str, int],
        udp: UdpExit | None = None,
    ) -> None:
        self.keys, self.rng = keys, rng
        self.exit_service, self.dht_rpc = exit_service, dht_rpc
        # UDP flows (runtime.relay.exit_udp); none given: every CONNECT_UDP is refused (EXITPOLICY)
        self.udp = udp or UdpExit(None, StreamLedger(StreamCaps.derive()), self.count)
        self._descriptor, self._link_to, self._on_link_closed = descriptor, link_to, on_link_closed
        self.links: LinkManager[RelayCircuitEntry] = LinkManager(LinkLimits(budget))
        self.memory = oom.MemoryGuard(
            budget,
            lambda: self.links.links,
            self._exit_streams,
            self.links.circuit_of,  # type: ignore[arg-type]  # Hashable: entries hash by identity
            lambda entry: self.destroy(entry, DestroyReason.RESOURCELIMIT),  # type: ignore[arg-type]
        )
        self.handlers: dict[RelayCommand, Handler] = {}
        self.stats = stats
        self.stats.setdefault("circuits", 0)
        self.stats.setdefault("destroyed_protocol", 0)
        self._tasks: set[asyncio.Task[None]] = set()
        self._create_budget = TokenBuckets(CREATE_RATE, CREATE_BURST, 65536)
        self.peer_bytes = PeerBytes()  # relay cells per proven peer per day: measurement reports

    def count(self, name: str, n: int = 1) -> None:
        self.stats[name] = self.stats.get(name, 0) + n

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("relay task failed", task=task.get_name(), error=type(task.exception()).__name__)

    def cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    # --- the links' owner ------------------------------------------------------------------------
    def cell_received(self, link: RelayLink, cell: Cell) -> None:
        if cell.command is CellCommand.CREATE:
            self.on_create(link, cell)
            return
        if cell.command is CellCommand.DESCRIPTOR_GET and cell.circ_id == 0:
            bridge_relay.send_descriptor(link, self._descriptor())
            return
        slot = link.circuits.get(cell.circ_id)
        if slot is None:
            self.count("cells_dropped")
            return  # a cell for a circuit that is gone; dropped, as Tor does
        entry = slot.circuit
        from_prev = slot is entry.prev
        try:
            if cell.command is CellCommand.DESTROY:
                self.destroy(entry, DestroyReason.of(cell.payload[0]), came_from=link)
            elif cell.command is CellCommand.CREATED and not from_prev:
                if entry.created_waiter is not None and not entry.created_waiter.done():
                    entry.created_waiter.set_result(cell.payload)
            elif cell.command in (CellCommand.RELAY, CellCommand.RELAY_EARLY):
                if link.peer_identity is not None:  # a relay we extended to: measured (§6)
                    self.peer_bytes.add(link.peer_identity, CELL_LEN)
                if from_prev:
                    entry.circ.handle_forward(cell.command, cell.payload)
                elif cell.command is CellCommand.RELAY_EARLY:
                    raise RemoteProtocolError("RELAY_EARLY toward the client")
                else:
                    entry.circ.handle_backward(cell.payload)
                if entry.circ.events:
                    self._dispatch(entry)
            else:
                raise RemoteProtocolError(f"unexpected {cell.command.name}")
        except OnionmeshError as exc:
            log.info("circuit destroyed: protocol violation", detail=str(exc))
            self.stats["destroyed_protocol"] += 1
            self.destroy(entry, DestroyReason.PROTOCOL)

    def link_closed(self, link: RelayLink) -> None:
        for entry in self.links.closed(link):
            self.destroy(entry, DestroyReason.CHANNEL_CLOSED, came_from=link)
        self._on_link_closed(link)

    def circuit_overflowed(self, slot: CircuitSlot[RelayCircuitEntry]) -> None:
        """A circuit queue at its cap: an end is ignoring flow control."""
        self.count("destroyed_queue_full")
        self.destroy(slot.circuit, DestroyReason.RESOURCELIMIT)

    def budget_exceeded(self) -> None:
        self.reclaim_memory()

    # --- circuits --------------------------------------------------------------------------------
    def on_create(self, link: RelayLink, cell: Cell) -> None:
        cid = cell.circ_id
        if not self._create_budget.allow(str(id(link)), time.monotonic()):
            self.count("creates_refused")
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
            self.count("handshakes_failed")
            log.info("CREATE refused", detail=str(exc))
            link.send_cell(Cell(cid, CellCommand.DESTROY, destroy_payload(DestroyReason.PROTOCOL)))
            return
        RelayCircuitEntry(RelayCircuit(keys, self.rng, time.monotonic, self.handlers.keys()), link, cid)
        self.stats["circuits"] += 1
        self.count("handshakes_ok")
        link.send_cell(Cell(cid, CellCommand.CREATED, created_payload(reply)))

    def _dispatch(self, entry: RelayCircuitEntry) -> None:
        """What terminates here: stream events to the exit's pumps, requests to their handlers."""
        for event in entry.circ.take_events():
            match event:
                case StreamDataReceived() | SendWindowOpened() | StreamEnded():
                    entry.streams.route(event)
                    if entry in self.udp.circuits:  # UDP flows (runtime.relay.exit_udp)
                        self.udp.route(entry, event)
                case UdpConnectRequested():
                    self.spawn(self.udp.connect(entry, event), "exit-udp")
                case DatagramReceived():
                    self.udp.datagram(entry, event)
                case ExtendRequested(extend):
                    self.spawn(self._extend(entry, extend), "relay-extend")
                case BeginRequested():
                    self.spawn(self.exit_service.begin(entry, event), "exit-begin")
                case ResolveRequested():
                    self.spawn(self.exit_service.resolve(entry, event), "exit-resolve")
                case DhtRpcRequested():
                    self.spawn(self._dht_rpc(entry, event), "dht-rpc")
                case MessageForHandler(message):
                    self.handlers[message.command](entry, message)

    def destroy(
        self, entry: RelayCircuitEntry, reason: DestroyReason, came_from: RelayLink | None = None
    ) -> None:
        if entry.dead:
            return
        entry.dead = True
        entry.prev.detach(None if entry.prev.link is came_from else reason)
        if entry.onward is not None:
            entry.onward.close(reason, came_from)
        entry.streams.close_all(remote=False)
        self.udp.close_circuit(entry)
        if entry.created_waiter is not None and not entry.created_waiter.done():
            entry.created_waiter.cancel()

    # --- memory ---------------------------------------------------------------------------------
    def _exit_streams(self) -> list[tuple[RelayCircuitEntry, Iterable[StreamPump]]]:
        """(circuit, its exit streams): each circuit once, from the link toward its client."""
        return [
            (slot.circuit, slot.circuit.streams.values())
            for link in list(self.links.links)
            for slot in list(link.circuits.values())
            if slot is slot.circuit.prev and slot.circuit.streams
        ]

    def queued_bytes(self) -> int:
        """Circuit queues plus exit streams' buffers: what MaxMemInQueues limits."""
        return self.memory.queued_bytes()

    def reclaim_memory(self) -> None:
        """The OOM policy: destroy the circuits with the oldest queued data until back under 90%."""
        self._after_reclaim(self.memory.reclaim())

    def _after_reclaim(self, killed: int) -> None:
        if killed:
            self.count("destroyed_oom", killed)
            log.warning("out of memory for queues: destroyed the stalest circuits", circuits=killed)

    async def memory_watch(self) -> None:
        """Stream buffers grow without passing through a circuit queue: look at the total each second."""
        while True:
            await asyncio.sleep(1.0)
            self._after_reclaim(self.memory.check())

    # --- what circuits ask of the world --------------------------------------------------------
    async def _dht_rpc(self, entry: RelayCircuitEntry, event: DhtRpcRequested) -> None:
        bodies = await self.dht_rpc.answer(entry, event)
        if not entry.dead:
            entry.circ.dht_answer(event.request_id, bodies)

    async def _extend(self, entry: RelayCircuitEntry, extend: Extend) -> None:
        onward: LinkOnward | None = None
        try:
            if extend.identity_pk == self.keys.identity.public:
                raise OSError("extend to ourselves")
            link = await self._link_to(extend.addresses, extend.identity_pk)
            if entry.dead:
                return
            cid = link.allocate_circ_id()
            peer = link.peer_identity
            sent = None if peer is None else lambda n, peer=peer: self.peer_bytes.add(peer, n * CELL_LEN)
            onward = entry.onward = LinkOnward(entry, link, cid, sent)
            entry.created_waiter = asyncio.get_running_loop().create_future()
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
            if onward is not None:
                onward.slot.detach()
                entry.onward = None
            entry.circ.extend_failed(DestroyReason.CONNECTFAILED)
            return
        if not entry.dead:
            entry.circ.extended(reply)

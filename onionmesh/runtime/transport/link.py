"""A link over TCP: drives `proto.link.LinkProtocol` from an asyncio stream pair.

One reader task per link feeds bytes to the sans-I/O protocol and hands each cell to the
owner (`LinkOwner.cell_received`).  Each circuit on the link has one `CircuitSlot` in the
link's table (`circuits`), the same type on clients and relays.  Output is pulled: a circuit
that queued cells marks its slot ready (`CircuitSlot.wake`, called by the state machine's
`on_output`), and once per event loop turn the link pulls the cells of every ready slot into
that circuit's queue in a `LinkScheduler` (counted against the node's budget and capped, even
while the socket drains), then takes cells EWMA-fairly and a record at a time, for as long as
the socket's buffer is under WRITE_HIGH_WATER, then waits for it to drain.
So cells queue only where they can be counted, capped and dropped with their circuit, and a
slow peer slows its senders instead of growing a buffer.  A relay's bandwidth limits, if any,
gate reads and writes.  Keep-alive PADDING cells go out when the link is quiet; a link that
hears nothing for `idle_timeout` is closed.

Not in this module: what cells mean (runtime.relay.switch, runtime.client.circuit_manager),
which link to reuse (link_manager).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from onionmesh.errors import OnionmeshError, RemoteProtocolError
from onionmesh.proto.link import MAX_CELLS_PER_RECORD, LinkEstablished, LinkProtocol, LinkRole
from onionmesh.proto.scheduler import LinkScheduler, QueueBudget
from onionmesh.rng import Rng
from onionmesh.runtime.loglimit import limited
from onionmesh.runtime.ratelimit import ByteBucket
from onionmesh.runtime.safelog import get_logger
from onionmesh.wire.cell import (
    CELL_LEN,
    INITIATOR_CIRC_BIT,
    Cell,
    CellCommand,
    DestroyReason,
    destroy_payload,
)

log = limited(get_logger("onionmesh.link"))  # every line here is a peer's doing: rate-limited

HANDSHAKE_TIMEOUT = 15.0
KEEPALIVE_INTERVAL = 30.0
IDLE_TIMEOUT = 120.0
READ_CHUNK = 256 * 1024
WRITE_HIGH_WATER = 256 * 1024  # bytes in the socket's user-space buffer before cells wait in queues
PADDING_CELL = Cell(0, CellCommand.PADDING).encode()
CIRCUIT_COMMANDS = frozenset({CellCommand.RELAY, CellCommand.RELAY_EARLY})


C = TypeVar("C")  # the owner's circuit: a client's CircuitHandle, a relay's RelayCircuitEntry


class LinkOwner(Protocol[C]):
    """What a link needs of the node that owns it."""

    def cell_received(self, link: Link[C], cell: Cell) -> None: ...
    def link_closed(self, link: Link[C]) -> None: ...
    def circuit_overflowed(self, slot: CircuitSlot[C]) -> None:
        """The circuit's queue on this link is full: its peer ignores flow control."""

    def budget_exceeded(self) -> None:
        """Queued bytes passed the node's budget (the OOM policy acts)."""


class CircuitSlot(Generic[C]):
    """One circuit on one link: the only kind of entry in a link's circuit table.

    `outbox` hands over the cells the circuit has for this link; the link calls it when it
    pulls, after `wake` marked the slot ready (at most once per loop turn however many cells).
    """

    __slots__ = ("attached", "circ_id", "circuit", "link", "outbox", "ready")

    def __init__(self, link: Link[C], circ_id: int, circuit: C, outbox: Callable[[], Iterable[Cell]]) -> None:
        self.link = link
        self.circ_id = circ_id
        self.circuit = circuit
        self.outbox = outbox
        self.ready = False
        self.attached = True

    def wake(self) -> None:
        """The circuit has cells for this link: the link pulls them on its next turn."""
        if not self.ready and self.attached:
            self.ready = True
            self.link.want_pull(self)

    def detach(self, reason: DestroyReason | None = None) -> None:
        """Leave the link's table (its queued cells are dropped); with a reason, tell the peer."""
        link = self.link
        if self.attached and link.circuits.get(self.circ_id) is self:
            link.forget_circuit(self.circ_id)
        self.attached = False
        if reason is not None and not link.closed:
            link.send_cell(Cell(self.circ_id, CellCommand.DESTROY, destroy_payload(reason)))


@dataclass
class LinkLimits:
    """What a node shares among its links: the queue budget and its bandwidth buckets."""

    budget: QueueBudget | None = None
    read: ByteBucket | None = None
    write: ByteBucket | None = None


class Link(Generic[C]):
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        proto: LinkProtocol,
        owner: LinkOwner[C],
        rng: Rng,
        limits: LinkLimits | None = None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.proto = proto
        self.owner = owner
        self.rng = rng
        self.circuits: dict[int, CircuitSlot[C]] = {}
        self._ready: list[CircuitSlot[C]] = []  # slots with cells to pull, in the order they woke
        self.closed = False
        self.limits = limits or LinkLimits()
        self.scheduler = LinkScheduler(self.limits.budget)
        self._flush_scheduled = False
        self._draining = False
        transport = writer.transport
        if transport is not None:  # drain() then waits only for the socket to fall to a quarter
            with contextlib.suppress(AttributeError, NotImplementedError):  # WsWriter has none
                transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_HIGH_WATER // 4)
        self._loop = asyncio.get_running_loop()
        self._last_heard = self._loop.time()
        self._last_sent = self._loop.time()
        self._tasks: list[asyncio.Task[None]] = []
        self.established = asyncio.Event()
        self.peer_identity: bytes | None = None
        self.suite: int | None = None  # the record suite (proto.link.SUITE_*), once established
        self.on_established: Callable[[Link[C]], None] | None = None  # the owner's hook, if it wants one
        self._deadline: asyncio.TimerHandle | None = None

    @property
    def is_initiator(self) -> bool:
        return self.proto.role is LinkRole.INITIATOR

    def start(self, handshake_timeout: float | None = None) -> None:
        """Start reading; with `handshake_timeout`, close the link if it is not established by then.

        The deadline is a handle the link cancels when it is established or closed, so a closed
        link is released at once (a timer's closure used to keep every link alive for its timeout).
        """
        self._tasks.append(asyncio.create_task(self._read_loop(), name="link-read"))
        if handshake_timeout is not None:
            self._deadline = self._loop.call_later(handshake_timeout, self._handshake_deadline)

    def _handshake_deadline(self) -> None:
        self._deadline = None
        if not self.established.is_set():
            self.close()

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _start_keepalive(self) -> None:
        """Only links that finished their handshake get a keep-alive task (junk costs one task)."""
        self._tasks.append(asyncio.create_task(self._keepalive_loop(), name="link-keepalive"))

    # --- sending -----------------------------------------------------------------------------
    def attach(self, circ_id: int, circuit: C, outbox: Callable[[], Iterable[Cell]]) -> CircuitSlot[C]:
        """Enter a circuit in this link's table; its cells are pulled from `outbox` when it wakes."""
        slot = CircuitSlot(self, circ_id, circuit, outbox)
        self.circuits[circ_id] = slot
        return slot

    def send_cell(self, cell: Cell) -> bool:
        """Queue a cell; False when it is a relay cell whose circuit's queue is full (the caller
        must then destroy that circuit: its peer ignores flow control)."""
        if self.closed:
            return True
        if not self._queue(cell):
            return False
        self._schedule_flush()
        return True

    def _queue(self, cell: Cell) -> bool:
        if cell.command in CIRCUIT_COMMANDS:
            return self.scheduler.push(cell.circ_id, cell.encode(), self._loop.time())
        self.scheduler.push_control(cell.encode())
        return True

    def want_pull(self, slot: CircuitSlot[C]) -> None:
        if not self.closed:
            self._ready.append(slot)
            self._schedule_flush()

    def _pull(self) -> None:
        """Take the cells of every ready circuit into its queue (counted and capped there)."""
        ready, self._ready = self._ready, []
        for slot in ready:
            slot.ready = False
            if not slot.attached:
                continue
            for cell in slot.outbox():
                if not self._queue(cell):
                    self.owner.circuit_overflowed(slot)
                    break
        if self.scheduler.budget.over():
            self.owner.budget_exceeded()

    def send_raw(self, encoded: bytes) -> None:
        """A link-level cell already encoded (keep-alive PADDING)."""
        if not self.closed:
            self.scheduler.push_control(encoded)
            self._schedule_flush()

    def forget_circuit(self, circ_id: int) -> None:
        """The circuit is gone: drop what it still had queued here and its id."""
        slot = self.circuits.pop(circ_id, None)
        if slot is not None:
            slot.attached = False
        self.scheduler.drop(circ_id)

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Pull ready circuits' cells, then move cells from the queues to the socket while its
        buffer has room (and tokens allow).  While the socket drains, cells are still pulled,
        so that every cell waiting to go out counts against the budget and the circuit's cap."""
        self._flush_scheduled = False
        if self._ready:
            self._pull()
        if self._draining:
            return
        while self.scheduler and not self.closed:
            room = WRITE_HIGH_WATER - self.write_buffer_size
            if room <= 0:
                self._draining = True
                self._tasks.append(asyncio.create_task(self._drain_then_flush(), name="link-drain"))
                return
            n = min(MAX_CELLS_PER_RECORD, max(1, room // CELL_LEN), len(self.scheduler))
            bucket = self.limits.write
            if bucket is not None:
                now = self._loop.time()
                granted = bucket.take(n * CELL_LEN, now)
                n = granted // CELL_LEN
                bucket.settle(granted, n * CELL_LEN)
                if n == 0:
                    self._draining = True  # waits for tokens as for a drain; pulls go on meanwhile
                    self._loop.call_later(bucket.wait_for(CELL_LEN, now), self._tokens_back)
                    return
            self.proto.send_cells(self.scheduler.pop(n, self._loop.time()))
            self._write(self.proto.data_to_send())

    def _tokens_back(self) -> None:
        self._draining = False
        self._schedule_flush()

    async def _drain_then_flush(self) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.writer.drain()
        self._tasks = [t for t in self._tasks if not t.done()]
        self._draining = False
        self._schedule_flush()

    def _write(self, data: bytes) -> None:
        try:
            self.writer.write(data)
            self._last_sent = self._loop.time()
        except (ConnectionError, RuntimeError):
            self.close()

    @property
    def write_buffer_size(self) -> int:
        transport = self.writer.transport
        return 0 if transport is None or transport.is_closing() else transport.get_write_buffer_size()

    @property
    def queued_bytes(self) -> int:
        """Cells waiting in this link's queues plus bytes in its socket buffer."""
        return len(self.scheduler) * CELL_LEN + self.write_buffer_size

    def allocate_circ_id(self) -> int:
        """A fresh circuit id on this link; the initiator's have the high bit set, so ends never collide."""
        high = INITIATOR_CIRC_BIT if self.is_initiator else 0
        while True:
            cid = high | (int.from_bytes(self.rng.random_bytes(4), "big") & 0x7FFF_FFFF)
            if cid & 0x7FFF_FFFF and cid not in self.circuits:
                return cid

    def peer_may_use(self, circ_id: int) -> bool:
        """Is `circ_id` in the range the peer allocates from?"""
        peer_high = 0 if self.is_initiator else INITIATOR_CIRC_BIT
        return circ_id != 0 and (circ_id & INITIATOR_CIRC_BIT) == peer_high

    # --- receiving -----------------------------------------------------------------------------
    async def _read_loop(self) -> None:
        try:
            while not self.closed:
                want = await self._read_allowance()
                data = await self.reader.read(want)
                if not data:
                    break
                if self.limits.read is not None:
                    self.limits.read.settle(want, len(data))
                self._last_heard = self._loop.time()
                for event in self.proto.receive_data(data):
                    if isinstance(event, Cell):
                        if event.command is not CellCommand.PADDING:
                            self.owner.cell_received(self, event)
                    elif isinstance(event, LinkEstablished):
                        self.peer_identity = event.peer_identity
                        self.suite = event.suite
                        self._write(self.proto.data_to_send())
                        self.established.set()
                        self._cancel_deadline()
                        self._start_keepalive()
                        if self.on_established is not None:
                            self.on_established(self)
                    if self.closed:
                        break
        except (OnionmeshError, RemoteProtocolError) as exc:
            log.info("link closed: protocol violation", error=type(exc).__name__, detail=str(exc))
        except (ConnectionError, OSError):
            pass
        except Exception as exc:  # a bug must cost one link, never the process
            log.error("link closed: internal error", error=type(exc).__name__)
        finally:
            self.close()

    async def _read_allowance(self) -> int:
        """How much to read now: READ_CHUNK, or what the relay's read bucket grants (waiting for it)."""
        bucket = self.limits.read
        if bucket is None:
            return READ_CHUNK
        while True:
            now = self._loop.time()
            granted = bucket.take(READ_CHUNK, now)
            if granted:
                return granted
            await asyncio.sleep(bucket.wait_for(CELL_LEN, now))

    async def _keepalive_loop(self) -> None:
        while not self.closed:
            await asyncio.sleep(KEEPALIVE_INTERVAL / 3)
            now = self._loop.time()
            if now - self._last_heard > IDLE_TIMEOUT:
                log.info("link closed: peer silent")
                self.close()
                return
            if self.established.is_set() and now - self._last_sent > KEEPALIVE_INTERVAL:
                self.send_raw(PADDING_CELL)

    @property
    def last_heard(self) -> float:
        """Loop time of the last bytes from the peer: the idlest link is the first to shed."""
        return self._last_heard

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._cancel_deadline()
        self.proto.close()
        self._ready.clear()
        for circ_id in list(self.scheduler.queues):  # what never left counts against no budget
            self.scheduler.drop(circ_id)
        with contextlib.suppress(OSError, RuntimeError):  # a socket already gone, a loop closing
            self.writer.close()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self.established.set()
        self.on_established = None
        self.owner.link_closed(self)

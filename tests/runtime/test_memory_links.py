"""The client's circuit manager, the relay's switch and the stream pump over in-memory links
(runtime.transport.memory_link): no socket, no listener, one process.  Also the switch's seam for
new relay roles: a test-only handler joins two circuits at the relay and a cell crosses."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from onionmesh.crypto import ntor
from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.errors import RemoteProtocolError
from onionmesh.proto.client_circuit import ClientCircuit
from onionmesh.proto.events import BeginRequested
from onionmesh.proto.scheduler import CIRCUIT_QUEUE_MAX_CELLS, QueueBudget
from onionmesh.rng import SeededRng
from onionmesh.runtime.client.circuit_manager import CircuitHandle, CircuitMgr
from onionmesh.runtime.keystore import KeyStore
from onionmesh.runtime.relay.circuit_entry import Join, RelayCircuitEntry
from onionmesh.runtime.relay.switch import CircuitSwitch
from onionmesh.runtime.transport.link import CircuitSlot, Link
from onionmesh.runtime.transport.memory_link import memory_link_pair, memory_pipe
from onionmesh.runtime.transport.stream_pump import StreamPump
from onionmesh.wire.cell import Cell, CellCommand, DestroyReason
from onionmesh.wire.relay_msg import TAG_LEN, RelayCommand, RelayMessage

WAIT = 10.0  # liveness bound only


class EchoExit:
    """Stands in for the relay's ExitService: every BEGIN is joined to an in-memory echo."""

    def __init__(self) -> None:
        self.begun: list[str] = []

    async def begin(self, entry: RelayCircuitEntry, event: BeginRequested) -> None:
        self.begun.append(event.begin.host)
        (relay_r, relay_w), (echo_r, echo_w) = memory_pipe()
        pump = StreamPump(entry.circ, entry.streams, event.stream_id, relay_r, relay_w)  # type: ignore[arg-type]
        entry.circ.connected(event.stream_id, None)
        pump.start()
        asyncio.get_running_loop().create_task(_echo(echo_r, echo_w))

    async def resolve(self, entry: RelayCircuitEntry, event: object) -> None:
        raise AssertionError("not used")


async def _echo(reader: asyncio.StreamReader, writer) -> None:  # type: ignore[no-untyped-def]
    while data := await reader.read(65536):
        writer.write(data)
    writer.close()


class MemRelay:
    def __init__(self, data_dir: Path, seed: int) -> None:
        self.rng = SeededRng(seed)
        self.keys = KeyStore(data_dir, self.rng)
        self.exit = EchoExit()
        self.switch = CircuitSwitch(
            self.keys,
            self.rng,
            QueueBudget(64 * 1024 * 1024),
            self.exit,  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]  # no DHT_RPC here
            lambda: None,
            self._no_links,
            lambda link: None,
            {},
        )
        self.descriptor = RelayDescriptor.create(
            identity=self.keys.identity,
            onion_cert=self.keys.onion_cert(),
            nickname="memory",
            link_addresses=(("192.0.2.1", 9001),),  # never dialled: the test hands out memory links
            dht_contact=None,
            exit_policy="accept *:*",
            bandwidth=1_000_000,
            published=int(time.time()),
        )

    async def _no_links(self, addresses: object, identity_pk: bytes) -> Link[RelayCircuitEntry]:
        raise OSError("no onward links in this test")

    async def accept_from(self, owner, rng) -> Link:  # type: ignore[no-untyped-def]
        """A link from `owner` to this relay; the relay's end joins its link manager."""
        limits = getattr(owner, "limits", None)
        mine, theirs = await memory_link_pair(
            owner, self.switch, self.keys.identity, rng, limits, self.switch.links.limits
        )
        self.switch.links.add(theirs)
        return mine


async def client_over_memory(relay: MemRelay) -> CircuitMgr:
    mgr = CircuitMgr(lambda: [relay.descriptor], SeededRng(5), hops=1)
    link = await relay.accept_from(mgr, SeededRng(6))

    async def link_to(desc: RelayDescriptor) -> Link:
        return link

    mgr._link_to = link_to  # type: ignore[method-assign]
    return mgr


async def test_a_stream_crosses_circuit_manager_switch_and_pumps_in_memory(tmp_path: Path) -> None:
    relay = MemRelay(tmp_path / "relay", 1)
    mgr = await client_over_memory(relay)
    async with asyncio.timeout(WAIT):
        handle = await mgr.build(hops=1, exit_fp=relay.descriptor.fingerprint, wait_directory=False)
        sid = await mgr.streams.open_stream(handle, "echo.example", 7, timeout=WAIT)
        (app_r, app_w), (sock_r, sock_w) = memory_pipe()
        mgr.streams.attach(handle, sid, sock_r, sock_w, b"")  # type: ignore[arg-type]
        data = os.urandom(700_000)  # several circuit windows: SENDMEs must flow both ways
        app_w.write(data)
        got = await app_r.readexactly(len(data))
    assert got == data
    assert relay.exit.begun == ["echo.example"]
    assert relay.switch.stats["circuits"] == 1
    assert handle.circ.bytes_out == len(data) and handle.slot is not None and handle.slot.attached
    mgr.close_all()


async def one_built_circuit(tmp_path: Path, seed: int) -> tuple[CircuitMgr, CircuitHandle]:
    relay = MemRelay(tmp_path / "relay", seed)
    mgr = await client_over_memory(relay)
    async with asyncio.timeout(WAIT):
        handle = await mgr.build(hops=1, exit_fp=relay.descriptor.fingerprint, wait_directory=False)
    return mgr, handle


async def test_a_link_pulls_each_ready_circuit_once_per_turn(tmp_path: Path) -> None:
    mgr, handle = await one_built_circuit(tmp_path, 2)
    assert handle.slot is not None
    pulls = 0
    outbox = handle.slot.outbox

    def counting() -> list[Cell]:
        nonlocal pulls
        pulls += 1
        return list(outbox())

    handle.slot.outbox = counting
    for _ in range(5):  # five cells queued in one loop turn ...
        handle.circ._seal(RelayMessage(RelayCommand.DROP, 0, b""))
    assert pulls == 0, "nothing is pushed: the link pulls on its next turn"
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert pulls == 1  # ... are taken by one pull
    mgr.close_all()


async def test_a_circuit_that_overflows_its_queue_is_closed(tmp_path: Path) -> None:
    mgr, handle = await one_built_circuit(tmp_path, 3)
    link = handle.link
    link._draining = True  # the socket does not drain: cells stay in the circuit's queue
    for _ in range(CIRCUIT_QUEUE_MAX_CELLS + 1):
        handle.circ._seal(RelayMessage(RelayCommand.DROP, 0, b""))
    await asyncio.sleep(0)
    assert handle.closed_reason == "circuit queue full"
    assert handle.circ.circ_id not in link.circuits
    assert link.scheduler.queued_bytes(handle.circ.circ_id) == 0  # dropped with its circuit
    mgr.close_all()


class RawClient:
    """A link owner that keeps every cell: drives a `ClientCircuit` by hand."""

    def __init__(self) -> None:
        self.cells: asyncio.Queue[Cell] = asyncio.Queue()

    def cell_received(self, link: Link, cell: Cell) -> None:
        self.cells.put_nowait(cell)

    def link_closed(self, link: Link) -> None:
        pass

    def circuit_overflowed(self, slot: CircuitSlot) -> None:
        raise AssertionError("no overflow expected")

    def budget_exceeded(self) -> None:
        pass


async def one_hop(relay: MemRelay, seed: int) -> tuple[RawClient, Link, ClientCircuit]:
    owner = RawClient()
    link = await relay.accept_from(owner, SeededRng(seed))
    circ = ClientCircuit(link.allocate_circ_id(), SeededRng(seed + 1))
    slot = link.attach(circ.circ_id, circ, circ.cells_to_send)
    circ.on_output = slot.wake
    circ.create(relay.keys.identity.public, relay.keys.current.key.public, ntor.LOCAL_TYPES[0])
    circ.handle_cell(await owner.cells.get())  # CREATED
    return owner, link, circ


JOIN = RelayCommand.TRUNCATE  # a command this relay otherwise refuses: the test's handler takes it


async def test_a_handler_joins_two_circuits_and_a_cell_crosses(tmp_path: Path) -> None:
    relay = MemRelay(tmp_path / "relay", 4)
    waiting: dict[bytes, RelayCircuitEntry] = {}
    joined: list[tuple[RelayCircuitEntry, RelayCircuitEntry]] = []

    def join_handler(entry: RelayCircuitEntry, msg: RelayMessage) -> None:
        """Rendezvous in miniature: the second circuit with the same cookie is joined to the first."""
        other = waiting.pop(msg.body, None)
        if other is None:
            waiting[msg.body] = entry
            return
        if other.dead:
            raise RemoteProtocolError("the first circuit is gone")
        Join.splice(other, entry, relay.switch.destroy)
        joined.append((other, entry))

    relay.switch.handlers[JOIN] = join_handler
    async with asyncio.timeout(WAIT):
        a_owner, a_link, a = await one_hop(relay, 10)
        b_owner, _b_link, b = await one_hop(relay, 20)
        cookie = os.urandom(20)
        a._seal(RelayMessage(JOIN, 0, cookie))
        b._seal(RelayMessage(JOIN, 0, cookie))
        while not joined:
            await asyncio.sleep(0.001)
        # A cell the relay does not recognize (as an end-to-end layer would make it): under A's
        # forward layer in, under B's backward layer out, unchanged in between.
        size = len(RelayMessage(RelayCommand.DROP, 0, b"").encode_plain())
        inner = b"\x01" * TAG_LEN + os.urandom(size - TAG_LEN)
        a_link.send_cell(Cell(a.circ_id, CellCommand.RELAY, a.hops[0].forward.unapply(inner)))
        cell = await b_owner.cells.get()
    assert cell.circ_id == b.circ_id and cell.command is CellCommand.RELAY
    assert b.hops[0].backward.unapply(cell.payload) == inner
    # Destroying one end of the join destroys the other, with a DESTROY to each client.
    first, second = joined[0]
    relay.switch.destroy(first, DestroyReason.FINISHED)
    assert first.dead and second.dead
    async with asyncio.timeout(WAIT):
        assert (await a_owner.cells.get()).command is CellCommand.DESTROY
        assert (await b_owner.cells.get()).command is CellCommand.DESTROY


async def test_a_command_without_a_handler_is_still_a_violation(tmp_path: Path) -> None:
    relay = MemRelay(tmp_path / "relay", 5)
    async with asyncio.timeout(WAIT):
        owner, _link, circ = await one_hop(relay, 30)
        circ._seal(RelayMessage(JOIN, 0, b"cookie"))
        cell = await owner.cells.get()
    assert cell.command is CellCommand.DESTROY
    assert relay.switch.stats["destroyed_protocol"] == 1

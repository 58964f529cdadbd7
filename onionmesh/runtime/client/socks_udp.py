"""SOCKS5 UDP ASSOCIATE (RFC 1928 §7) carried over circuits as connected UDP flows (issue 22).

One association = one UDP relay socket on the proxy's own (loopback) address, answered to the
client in the ASSOCIATE reply, and alive exactly as long as the TCP connection that asked for
it.  Only the client that opened it may use it: datagrams must come from the control
connection's IP address (and from DST.PORT, when the request named one); the first accepted
datagram fixes the client's address, as RFC 1928 says.  Datagrams with FRAG != 0 are dropped
(the RFC lets an implementation refuse fragmentation).

Each destination the client names becomes one flow: CONNECT_UDP to an exit whose UDP policy
accepts the port, on a circuit of this association's isolation key (SOCKS username/password,
as for TCP), names resolved at the exit.  Flows of one association share a circuit while its
exit accepts their ports.  Datagrams that wait (for CONNECTED_UDP or the circuit window) sit in
a bounded queue and are dropped when it is full (proto.udp_flow); idle flows are ended.

Not in this module: the SOCKS handshake (proto.socks), the circuit machinery (circuit_manager).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from onionmesh.directory.path_selection import exit_accepts_udp_port, weighted_index
from onionmesh.errors import DirectoryError, OnionmeshError, RemoteProtocolError, StreamFailed
from onionmesh.proto.events import DatagramReceived, SendWindowOpened, StreamEnded
from onionmesh.proto.socks import SocksServer
from onionmesh.proto.socks_wire import SocksReply, SocksRequest
from onionmesh.proto.udp_flow import (
    IDLE_TIMEOUT,
    MAX_FLOWS,
    SHARED_QUEUE_BYTES,
    DatagramQueue,
    Flow,
    FlowTable,
)
from onionmesh.runtime.client.circuit_handle import CircuitHandle
from onionmesh.runtime.client.circuit_manager import CircuitMgr
from onionmesh.runtime.loglimit import limited
from onionmesh.runtime.safelog import get_logger
from onionmesh.wire.relay_msg import EndReason
from onionmesh.wire.udp_msg import DATAGRAM_MAX, SocksUdpHeader

log = get_logger("onionmesh.socks.udp")
peer_log = limited(log)

FLOW_OPEN_TIMEOUT = 20.0
SWEEP_INTERVAL = 5.0


@dataclass
class UdpStats:
    """Counters over every association of a listener (tests and metrics read them)."""

    associations: int = 0
    datagrams_sent: int = 0  # client -> circuit
    datagrams_received: int = 0  # circuit -> client
    dropped_foreign: int = 0  # from an address other than the association's client
    dropped_fragment: int = 0  # FRAG != 0
    dropped_malformed: int = 0
    dropped_full: int = 0  # a queue was full
    dropped_no_exit: int = 0  # no exit accepts UDP to the port, or the flow was refused
    flows_opened: int = 0
    flows_refused: int = 0
    flows_idle_closed: int = 0


class _RelaySocket(asyncio.DatagramProtocol):
    def __init__(self, association: UdpAssociation) -> None:
        self.association = association

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.association.from_client(data, addr)

    def error_received(self, exc: Exception) -> None:
        pass  # the client's port went away (ICMP): its datagrams stop, the association stays


@dataclass(eq=False)
class _Pending:
    """A flow being opened: the datagrams that wait for its CONNECTED_UDP."""

    queue: DatagramQueue = field(default_factory=DatagramQueue)


class UdpAssociation:
    def __init__(
        self,
        circuits: CircuitMgr,
        isolation: tuple[bytes | None, bytes | None],
        client_host: str,
        client_port: int,
        stats: UdpStats,
        *,
        idle_timeout: float = IDLE_TIMEOUT,
        max_flows: int = MAX_FLOWS,
    ) -> None:
        self.circuits = circuits
        self.isolation = isolation
        self.client_host = client_host
        self.client_port = client_port  # 0: whatever port the first datagram comes from
        self.client_addr: tuple[str, int] | None = None
        self.stats = stats
        self.idle_timeout = idle_timeout
        self.max_flows = max_flows
        self.transport: asyncio.DatagramTransport | None = None
        self.tables: dict[CircuitHandle, FlowTable] = {}  # the flows on each circuit
        self.where: dict[tuple[str, int], CircuitHandle] = {}  # destination -> its circuit
        self.opening: dict[tuple[str, int], _Pending] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._build_lock = asyncio.Lock()
        self.closed = False

    async def start(self, bind_host: str) -> tuple[str, int]:
        """Bind the relay socket on `bind_host` (the proxy's address): (host, port) for the reply."""
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: _RelaySocket(self), local_addr=(bind_host, 0)
        )
        sweeper = asyncio.create_task(self._sweep(), name="socks-udp-sweep")
        self._tasks.add(sweeper)
        self.stats.associations += 1
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    # --- from the client ---------------------------------------------------------------------
    def from_client(self, packet: bytes, addr: tuple[str, int]) -> None:
        if self.closed:
            return
        if not self._is_client(addr):
            self.stats.dropped_foreign += 1
            return
        try:
            header = SocksUdpHeader.decode(packet)
        except RemoteProtocolError:
            self.stats.dropped_malformed += 1
            return
        if header.frag != 0:
            self.stats.dropped_fragment += 1
            return
        if not 0 < len(header.data) <= DATAGRAM_MAX:
            self.stats.dropped_malformed += 1
            return
        key = (header.host, header.port)
        handle = self.where.get(key)
        if handle is not None:
            table = self.tables[handle]
            flow = table.get(key)
            if flow is not None:
                flow.last_active = time.monotonic()
                self._send(handle, flow, header.data)
                return
        pending = self.opening.get(key)
        if pending is None:
            if len(self.where) + len(self.opening) >= self.max_flows:
                self.stats.dropped_full += 1
                return
            pending = self.opening[key] = _Pending()
            task = asyncio.create_task(self._open(key, pending), name="socks-udp-open")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if not self._room(header.data) or not pending.queue.push(header.data):
            self.stats.dropped_full += 1

    def _is_client(self, addr: tuple[str, int]) -> bool:
        if self.client_addr is not None:
            return (addr[0], addr[1]) == self.client_addr
        if addr[0] != self.client_host or (self.client_port and addr[1] != self.client_port):
            return False
        self.client_addr = (addr[0], addr[1])
        return True

    def _room(self, data: bytes) -> bool:
        """Whether the association's queues, over all its flows, can take `data`."""
        queued = sum(p.queue.bytes for p in self.opening.values())
        queued += sum(f.queue.bytes for table in self.tables.values() for f in table.flows())
        return queued + len(data) <= SHARED_QUEUE_BYTES

    def _send(self, handle: CircuitHandle, flow: Flow, data: bytes) -> None:
        if not flow.queue and handle.circ.send_datagram(flow.stream_id, data):
            self.stats.datagrams_sent += 1
        elif not self._room(data) or not flow.queue.push(data):
            self.stats.dropped_full += 1

    # --- opening flows ---------------------------------------------------------------------------
    async def _open(self, key: tuple[str, int], pending: _Pending) -> None:
        host, port = key
        try:
            handle = await self._circuit_for(port)
            sid = handle.circ.connect_udp(host, port)
            waiter: asyncio.Future[object] = asyncio.get_running_loop().create_future()
            handle.pending[sid] = waiter
            try:
                async with asyncio.timeout(FLOW_OPEN_TIMEOUT):
                    await waiter
            except (TimeoutError, asyncio.CancelledError):  # given up, or the association closed
                handle.pending.pop(sid, None)
                handle.unattached.pop(sid, None)
                if handle.closed_reason is None:
                    handle.circ.end_stream(sid, EndReason.TIMEOUT)
                raise
        except (OnionmeshError, OSError, TimeoutError) as exc:
            self.opening.pop(key, None)
            self.stats.flows_refused += 1
            self.stats.dropped_no_exit += len(pending.queue)
            pending.queue.clear()
            if isinstance(exc, StreamFailed):
                peer_log.info("UDP flow refused by the exit", reason=exc.reason.name)
            else:
                peer_log.info("no circuit for a UDP flow", error=type(exc).__name__)
            return
        self.opening.pop(key, None)
        early = handle.unattached.pop(sid, [])  # what came with CONNECTED_UDP (END, window)
        table = self.tables.get(handle)
        if self.closed or table is None or handle.closed_reason is not None:
            if handle.closed_reason is None:
                handle.circ.end_stream(sid, EndReason.DONE)  # nobody to carry it for any more
            return
        flow = table.add(key, sid, time.monotonic())
        flow.open = True
        self.where[key] = handle
        self.stats.flows_opened += 1
        while pending.queue:
            self._send(handle, flow, pending.queue.pop())
        for event in early:
            self.route(handle, event)

    async def _circuit_for(self, port: int) -> CircuitHandle:
        """A circuit of ours whose exit accepts UDP to `port`, else a new one through such an exit."""
        async with self._build_lock:
            for handle in self.tables:
                if handle.closed_reason is None and exit_accepts_udp_port(handle.exit, port):
                    return handle
            candidates = [d for d in self.circuits.relays() if exit_accepts_udp_port(d, port)]
            if not candidates:
                raise DirectoryError(f"no exit accepts UDP to port {port}")  # as path selection says it
            desc = candidates[weighted_index(self.circuits.rng, [max(1, d.bandwidth) for d in candidates])]
            handle = await self.circuits.build(isolation=self.isolation, exit_fp=desc.fingerprint)
            handle.udp = self
            self.tables[handle] = FlowTable(self.idle_timeout, self.max_flows)
            return handle

    # --- from the circuits -----------------------------------------------------------------------
    def owns(self, handle: CircuitHandle, sid: int) -> bool:
        table = self.tables.get(handle)
        return table is not None and table.by_id(sid) is not None

    def route(self, handle: CircuitHandle, event: object) -> None:
        """A circuit event for our flows: a datagram back, a flow ended, the window opened."""
        table = self.tables.get(handle)
        if table is None:
            return
        match event:
            case DatagramReceived(sid, data):
                flow = table.by_id(sid)
                if flow is None or self.transport is None or self.client_addr is None:
                    return
                flow.last_active = time.monotonic()
                host, port = flow.key  # type: ignore[misc]
                self.transport.sendto(SocksUdpHeader(0, host, port, data).encode(), self.client_addr)
                self.stats.datagrams_received += 1
            case StreamEnded(sid):
                flow = table.remove(sid)
                if flow is not None:
                    self.where.pop(flow.key, None)  # type: ignore[arg-type]
            case SendWindowOpened(0):
                for flow in table.flows():
                    while flow.queue and handle.circ.send_datagram(flow.stream_id, flow.queue.peek()):
                        flow.queue.pop()
                        self.stats.datagrams_sent += 1

    def circuit_closed(self, handle: CircuitHandle) -> None:
        table = self.tables.pop(handle, None)
        if table is not None:
            for flow in table.flows():
                self.where.pop(flow.key, None)  # type: ignore[arg-type]

    # --- life ------------------------------------------------------------------------------------
    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(SWEEP_INTERVAL, self.idle_timeout / 2))
            now = time.monotonic()
            for handle, table in list(self.tables.items()):
                for flow in table.expired(now):
                    self.where.pop(flow.key, None)  # type: ignore[arg-type]
                    self.stats.flows_idle_closed += 1
                    if handle.closed_reason is None:
                        handle.circ.end_stream(flow.stream_id, EndReason.DONE)

    def close(self) -> None:
        """The TCP control connection closed: end every flow, close the relay socket."""
        if self.closed:
            return
        self.closed = True
        for task in list(self._tasks):
            task.cancel()
        for handle, table in self.tables.items():
            for flow in table.flows():
                if handle.closed_reason is None:
                    handle.circ.end_stream(flow.stream_id, EndReason.DONE)
                table.remove(flow.stream_id)
            if handle.udp is self:
                handle.udp = None
        self.tables.clear()
        self.where.clear()
        self.opening.clear()
        if self.transport is not None:
            with contextlib.suppress(RuntimeError):
                self.transport.close()


async def serve_associate(
    circuits: CircuitMgr,
    stats: UdpStats,
    machine: SocksServer,
    request: SocksRequest,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    """Answer UDP ASSOCIATE with the relay socket's address, then hold the association until the
    TCP control connection closes (anything the client sends on it is read and discarded)."""

    def reply(code: SocksReply, host: str | None = None, port: int = 0) -> None:
        machine.reply(code, host, port)  # SOCKS5 only: any IP fits the reply
        writer.write(machine.data_to_send())

    local = writer.get_extra_info("sockname")
    peer = writer.get_extra_info("peername")
    if not local or not peer:
        reply(SocksReply.GENERAL_FAILURE)
        return
    # The client's IP is the control connection's, whatever DST.ADDR says (a client behind no NAT
    # may send 0.0.0.0); DST.PORT, when not 0, is the only port it may send from.
    isolation = (request.username, request.password)
    association = UdpAssociation(circuits, isolation, peer[0], request.port, stats)
    try:
        host, port = await association.start(local[0])
    except OSError:
        reply(SocksReply.GENERAL_FAILURE)
        return
    try:
        reply(SocksReply.SUCCEEDED, host, port)
        await writer.drain()
        while await reader.read(4096):
            pass
    finally:
        association.close()

"""The SOCKS listener: accepts connections within its bounds, drives `proto.socks.SocksServer`
through each handshake and hands the request on: CONNECT and RESOLVE to `SocksRequests`
(socks_requests: what each reply code means), UDP ASSOCIATE to socks_udp.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket

from onionmesh.crypto.hs_address import is_onion_host
from onionmesh.proto.socks import SocksRejected, SocksServer
from onionmesh.proto.socks_wire import SocksCommand, SocksReply, SocksRequest
from onionmesh.runtime.client.circuit_manager import CircuitMgr
from onionmesh.runtime.client.socks_requests import SocksRequests, close_after_reply
from onionmesh.runtime.client.socks_udp import UdpStats, serve_associate
from onionmesh.runtime.client.stream_status import StreamRecord, source_address
from onionmesh.runtime.loglimit import limited
from onionmesh.runtime.safelog import get_logger
from onionmesh.runtime.transport.listeners import accept_loop, bind_listeners

log = get_logger("onionmesh.socks")
peer_log = limited(log)  # lines any local process can repeat at will: rate-limited (runtime.loglimit)

HANDSHAKE_TIMEOUT = 30.0
MAX_CONNECTIONS = 4096  # at most; see default_max_connections
MAX_HANDSHAKES = 128  # connections that have not yet sent their request
LISTEN_BACKLOG = 1024  # a browser opens dozens of connections at once; asyncio's default is 100


def default_max_connections() -> int:
    """Half the descriptors this process may open (each SOCKS stream costs one), at most 4096:
    the other half stays for links, the DHT, the control API and logs."""
    try:
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        soft = 1024
    if soft <= 0 or soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(16, min(MAX_CONNECTIONS, soft // 2))


class SocksListener:
    """Accepts SOCKS connections, at most `max_connections` at once and at most `max_handshakes`
    of them still in their handshake: a newcomer past that closes the oldest one still in its
    handshake (idle connections cannot lock users out), and one past `max_connections` is closed
    at once.  Every connection is closed on every path (a handshake that times out included)."""

    def __init__(
        self,
        circuits: CircuitMgr,
        host: str,
        port: int,
        *,
        max_connections: int | None = None,
        max_handshakes: int = MAX_HANDSHAKES,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        early_reply: bool = True,
    ) -> None:
        self.circuits = circuits
        self.host = host
        self.port = port
        self.max_connections = max_connections or default_max_connections()
        self.max_handshakes = max_handshakes
        self.handshake_timeout = handshake_timeout
        self._sockets: list[socket.socket] = []
        self._accepting: list[asyncio.Task[None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._conns: set[asyncio.StreamWriter] = set()
        # Connections that have not sent their request yet, oldest first (the writer once it exists).
        self._handshaking: dict[socket.socket, asyncio.StreamWriter | None] = {}
        self.requests = SocksRequests(circuits, early_reply)  # CONNECT, NAME.onion, RESOLVE
        self.refused = 0  # closed at once: max_connections reached
        self.evicted = 0  # closed in their handshake to make room for a newcomer
        self.udp_stats = UdpStats()  # UDP ASSOCIATE, over all associations

    async def start(self) -> None:
        self._sockets = bind_listeners("SOCKS", self.host, self.port, LISTEN_BACKLOG)
        self.port = self._sockets[0].getsockname()[1]
        self._accepting = [
            asyncio.create_task(accept_loop(s, "SOCKS", self._accepted, self._shed), name="socks-accept")
            for s in self._sockets
        ]

    async def stop(self) -> None:
        for task in self._accepting:
            task.cancel()
        for sock in self._sockets:
            sock.close()
        for writer in list(self._conns):
            writer.close()

    @property
    def connections(self) -> int:
        return len(self._tasks)

    def _accepted(self, conn: socket.socket) -> None:
        if len(self._tasks) >= self.max_connections:  # one task per connection, until it closes
            self.refused += 1
            conn.close()
            peer_log.warning(
                "SOCKS: connection limit reached; refusing new connections", limit=self.max_connections
            )
            return
        if len(self._handshaking) >= self.max_handshakes:
            self._shed()
        self._handshaking[conn] = None
        task = asyncio.create_task(self._serve_socket(conn), name="socks-conn")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _shed(self) -> bool:
        """Close the oldest connection still in its handshake (it frees a descriptor)."""
        for conn, writer in self._handshaking.items():
            del self._handshaking[conn]
            self.evicted += 1
            if writer is not None:
                writer.close()
            else:  # its task has not started: the peer sees EOF now, the task closes it
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            return True
        return False

    async def _serve_socket(self, conn: socket.socket) -> None:
        if conn not in self._handshaking:  # shed before it started
            conn.close()
            return
        try:
            reader, writer = await asyncio.open_connection(sock=conn)
        except OSError:
            self._handshaking.pop(conn, None)
            conn.close()
            return
        if conn not in self._handshaking:
            writer.close()
            return
        self._handshaking[conn] = writer
        await self._serve(conn, reader, writer)

    async def _serve(
        self, conn: socket.socket, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._conns.add(writer)
        with contextlib.suppress(OSError):
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        machine = SocksServer(udp=True)
        attached = False
        status = self.circuits.streams.status
        record: StreamRecord | None = None
        try:
            try:
                async with asyncio.timeout(self.handshake_timeout):
                    request = await self._handshake(machine, reader, writer)
            finally:
                self._handshaking.pop(conn, None)
            if request is None:
                return
            if request.command is SocksCommand.UDP_ASSOCIATE:  # runtime.client.socks_udp
                await serve_associate(self.circuits, self.udp_stats, machine, request, reader, writer)
                return
            resolve = request.command is not SocksCommand.CONNECT
            isolation = (request.username, request.password)
            record = status.new(
                request.host,
                request.port,
                source_address(writer.get_extra_info("peername")),
                isolation,
                resolve=resolve,
            )
            if is_onion_host(request.host):  # never resolved, never sent to an exit
                if request.command is SocksCommand.CONNECT:
                    attached = await self.requests.connect_onion(machine, request, reader, writer, record)
                else:
                    self.requests.reply(machine, writer, SocksReply.ONION_BAD_ADDRESS)
                    status.failed(record, "RESOLVEFAILED")
                    await close_after_reply(writer)
            elif request.command is SocksCommand.CONNECT:
                attached = await self.requests.connect(machine, request, reader, writer, record)
            else:
                await self.requests.resolve(machine, request, writer, record)
            if attached:  # the stream owns the socket now; count it until it closes
                await writer.wait_closed()
        except (TimeoutError, ConnectionError, OSError):
            pass
        except Exception as exc:  # one broken request must never stop the listener
            peer_log.error("socks connection failed: internal error", error=type(exc).__name__)
        finally:
            self._conns.discard(writer)
            if not attached:
                writer.close()
                if record is not None:
                    status.abandon(record)  # ended by an error or a cancellation: FAILED, CLOSED

    async def _handshake(
        self, machine: SocksServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> SocksRequest | None:
        while True:
            event = machine.next_event()
            out = machine.data_to_send()
            if out:
                writer.write(out)
            if isinstance(event, SocksRequest):
                return event
            if isinstance(event, SocksRejected):
                log.debug("socks request rejected", reason=event.reason)
                await close_after_reply(writer)
                return None
            data = await reader.read(4096)
            if not data:
                writer.close()
                return None
            machine.receive_data(data)

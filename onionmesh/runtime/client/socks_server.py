"""The SOCKS listener: drives `proto.socks.SocksServer` for each connection and hands streams to circuits.

Replies mean what they say: 0x02 the exit's policy refused, 0x04 the name did not resolve or
the host is unreachable, 0x05 the destination refused, 0x06 nothing answered in time,
0x07/0x08 unsupported command or address type (decided by the parser).  A request is retried
on a circuit through another exit when the first exit refused or failed, within one deadline.
0x02 also answers a request that the node restrictions leave no exit for (ExitNodes, or a
username `exit={cc}` whose countries have no exit for the port) and one whose `exit=` username
does not parse: "not allowed by ruleset", the user's ruleset; never a silent other exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import resource
import socket
import time

from onionmesh.crypto.hs_address import is_onion_host
from onionmesh.directory.node_restrictions import RestrictionError
from onionmesh.directory.path_selection import RestrictedExitError
from onionmesh.errors import OnionConnectFailed, OnionmeshError
from onionmesh.proto.socks import SocksCommand, SocksRejected, SocksReply, SocksRequest, SocksServer
from onionmesh.runtime.client.circuit_handle import stream_timeout
from onionmesh.runtime.client.circuit_manager import CircuitMgr, StreamFailed
from onionmesh.runtime.client.onion_client import OnionConnector
from onionmesh.runtime.client.path_policy import stream_restriction
from onionmesh.runtime.client.socks_udp import UdpStats, serve_associate
from onionmesh.runtime.client.stream_status import StreamRecord, end_reasons, source_address
from onionmesh.runtime.loglimit import limited
from onionmesh.runtime.safelog import Sensitive, get_logger
from onionmesh.runtime.transport.listeners import accept_loop, bind_listeners
from onionmesh.wire.relay_msg import EndReason, ResolvedType

log = get_logger("onionmesh.socks")
peer_log = limited(log)  # lines any local process can repeat at will: rate-limited (runtime.loglimit)

REQUEST_DEADLINE = 60.0
HANDSHAKE_TIMEOUT = 30.0
MAX_CONNECTIONS = 4096  # at most; see default_max_connections
MAX_HANDSHAKES = 128  # connections that have not yet sent their request


MAX_ATTEMPTS = 3
LISTEN_BACKLOG = 1024  # a browser opens dozens of connections at once; asyncio's default is 100

END_TO_SOCKS = {
    EndReason.EXITPOLICY: SocksReply.NOT_ALLOWED,
    EndReason.RESOLVEFAILED: SocksReply.HOST_UNREACHABLE,
    EndReason.NOROUTE: SocksReply.HOST_UNREACHABLE,
    EndReason.CONNECTREFUSED: SocksReply.CONNECTION_REFUSED,
    EndReason.TIMEOUT: SocksReply.TTL_EXPIRED,
    EndReason.CONNRESET: SocksReply.CONNECTION_REFUSED,
}
# Reasons that say something about the exit rather than the destination: try another exit.
RETRY_ELSEWHERE = {
    EndReason.EXITPOLICY,
    EndReason.DESTROY,
    EndReason.MISC,
    EndReason.RESOURCELIMIT,
    EndReason.INTERNAL,
    EndReason.HIBERNATING,
    EndReason.TORPROTOCOL,
}


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
        self.onion: OnionConnector | None = None  # set by ClientNode: NAME.onion goes there, never to an exit
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
                    attached = await self._connect_onion(machine, request, reader, writer, record)
                else:
                    self._reply(machine, writer, SocksReply.ONION_BAD_ADDRESS)
                    status.failed(record, "RESOLVEFAILED")
                    await _close(writer)
            elif request.command is SocksCommand.CONNECT:
                attached = await self._connect(machine, request, reader, writer, record)
            else:
                await self._resolve(machine, request, writer, record)
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
                await _close(writer)
                return None
            data = await reader.read(4096)
            if not data:
                writer.close()
                return None
            machine.receive_data(data)

    def _reply(
        self,
        machine: SocksServer,
        writer: asyncio.StreamWriter,
        code: SocksReply,
        host: str | None = None,
        port: int = 0,
    ) -> None:
        try:
            machine.reply(code, host, port)
        except OnionmeshError:
            # The answer does not fit the client's SOCKS version (an IPv6 address for SOCKS4):
            # a success without the address would be a lie.
            machine.reply(SocksReply.HOST_UNREACHABLE if code is SocksReply.SUCCEEDED else code)
        writer.write(machine.data_to_send())

    async def _connect(
        self,
        machine: SocksServer,
        request: SocksRequest,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        record: StreamRecord,
    ) -> bool:
        """Open the stream (retrying through other exits); True once the socket is attached to it."""
        isolation = (request.username, request.password)
        status = self.circuits.streams.status
        if not _restriction_parses(isolation):
            status.failed(record, "NOROUTE")
            self._reply(machine, writer, SocksReply.NOT_ALLOWED)
            await _close(writer)
            return False
        deadline = time.monotonic() + REQUEST_DEADLINE
        self.circuits.ports_seen[request.port] = time.monotonic()
        code = SocksReply.GENERAL_FAILURE
        avoid: set[str] = set()
        why: tuple[str, str | None] = ("MISC", None)  # Tor's REASON / REMOTE_REASON if it fails
        for _attempt in range(MAX_ATTEMPTS):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                code, why = SocksReply.TTL_EXPIRED, ("TIMEOUT", None)
                break
            try:
                if avoid:
                    async with asyncio.timeout(remaining):
                        handle = await self.circuits.build(
                            port=request.port, isolation=isolation, avoid=avoid
                        )
                else:
                    async with asyncio.timeout(remaining):
                        handle = await self.circuits.get_circuit(request.port, isolation)
                sid = await self.circuits.streams.open_stream(
                    handle,
                    request.host,
                    request.port,
                    min(stream_timeout(handle), max(1.0, deadline - time.monotonic())),
                    record,
                )
            except StreamFailed as failed:
                code, why = (
                    END_TO_SOCKS.get(failed.reason, SocksReply.GENERAL_FAILURE),
                    end_reasons(failed.reason),
                )
                if failed.reason not in RETRY_ELSEWHERE:
                    break
                status.detached(record, *why)
                avoid.add(handle.exit.fingerprint)
                if failed.reason is not EndReason.EXITPOLICY:  # refusing by policy is no failure
                    self.circuits.policy.relay_failed(handle.exit.fingerprint)
                continue
            except TimeoutError:
                code, why = SocksReply.TTL_EXPIRED, ("TIMEOUT", None)
                status.detached(record, *why)
                continue
            except RestrictedExitError:  # path_policy logged why (rate-limited); no other exit
                code, why = SocksReply.NOT_ALLOWED, ("NOROUTE", None)
                break
            except (OnionmeshError, OSError) as exc:
                peer_log.info("no circuit for stream", error=type(exc).__name__, detail=str(exc))
                code, why = SocksReply.GENERAL_FAILURE, ("NOROUTE", None)
                continue
            self._reply(machine, writer, SocksReply.SUCCEEDED)
            self.circuits.streams.attach(handle, sid, reader, writer, machine.take_leftover(), record)
            log.debug("stream attached", circuit=handle.number, host=Sensitive(request.host))
            return True
        status.failed(record, *why)
        self._reply(machine, writer, code)
        await _close(writer)
        return False

    async def _connect_onion(
        self,
        machine: SocksServer,
        request: SocksRequest,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        record: StreamRecord,
    ) -> bool:
        """A stream to an onion service over its rendezvous circuit (runtime.client.onion_client);
        failures answer Tor's extended codes 0xF0-0xF7 within REQUEST_DEADLINE."""
        code: int = SocksReply.GENERAL_FAILURE
        deadline = time.monotonic() + REQUEST_DEADLINE
        isolation = (request.username, request.password)
        status = self.circuits.streams.status
        why: tuple[str, str | None] = ("MISC", None)
        if self.onion is None:
            code, why = SocksReply.ONION_BAD_ADDRESS, ("RESOLVEFAILED", None)
        else:
            for _attempt in range(2):  # a cached rendezvous circuit may have died under us: once more
                try:
                    left = deadline - time.monotonic()
                    handle = await self.onion.circuit_for(request.host, isolation, left)
                    left = max(1.0, min(stream_timeout(handle), deadline - time.monotonic()))
                    sid = await self.circuits.streams.open_stream(
                        handle, request.host, request.port, left, record
                    )
                except OnionConnectFailed as failed:
                    code = failed.code
                    why = (
                        "TIMEOUT" if failed.code == SocksReply.ONION_INTRO_TIMEOUT else "RESOLVEFAILED",
                        None,
                    )
                    break
                except StreamFailed as failed:
                    code, why = (
                        END_TO_SOCKS.get(failed.reason, SocksReply.GENERAL_FAILURE),
                        end_reasons(failed.reason),
                    )
                    if failed.reason in (EndReason.DONE, EndReason.EXITPOLICY):
                        code = SocksReply.CONNECTION_REFUSED  # before CONNECTED: an unmapped port
                    if failed.reason is not EndReason.DESTROY:
                        break
                    status.detached(record, *why)
                    continue
                except TimeoutError:
                    code, why = SocksReply.TTL_EXPIRED, ("TIMEOUT", None)
                    break
                self._reply(machine, writer, SocksReply.SUCCEEDED)
                self.circuits.streams.attach(handle, sid, reader, writer, machine.take_leftover(), record)
                return True
        status.failed(record, *why)
        self._reply(machine, writer, SocksReply(code))
        await _close(writer)
        return False

    async def _resolve(
        self, machine: SocksServer, request: SocksRequest, writer: asyncio.StreamWriter, record: StreamRecord
    ) -> None:
        code, answer = SocksReply.HOST_UNREACHABLE, None
        status = self.circuits.streams.status
        if not _restriction_parses((request.username, request.password)):
            status.failed(record, "NOROUTE")
            self._reply(machine, writer, SocksReply.NOT_ALLOWED)
            await _close(writer)
            return
        isolation = (request.username, request.password)
        why: tuple[str, str | None] = ("RESOLVEFAILED", None)
        try:
            async with asyncio.timeout(REQUEST_DEADLINE):
                handle = await self.circuits.get_circuit(None, isolation)
            timeout = stream_timeout(handle)
            resolved = await self.circuits.streams.resolve(handle, request.host, timeout, record)
            for kind, value, _ttl in resolved.answers:
                if request.command is SocksCommand.RESOLVE_PTR and kind is ResolvedType.HOSTNAME:
                    code, answer = SocksReply.SUCCEEDED, value
                    break
                if request.command is SocksCommand.RESOLVE and kind in (ResolvedType.IPV4, ResolvedType.IPV6):
                    code, answer = SocksReply.SUCCEEDED, str(ipaddress.ip_address(value))
                    break
        except StreamFailed as failed:
            code, why = (
                END_TO_SOCKS.get(failed.reason, SocksReply.GENERAL_FAILURE),
                end_reasons(failed.reason),
            )
        except TimeoutError:
            code, why = SocksReply.TTL_EXPIRED, ("TIMEOUT", None)
        except RestrictedExitError:
            code, why = SocksReply.NOT_ALLOWED, ("NOROUTE", None)
        except (OnionmeshError, OSError):
            code, why = SocksReply.GENERAL_FAILURE, ("NOROUTE", None)
        if code == SocksReply.SUCCEEDED:
            status.succeeded(record)
            status.closed(record)
        else:
            status.failed(record, *why)
        self._reply(machine, writer, code, answer)
        await _close(writer)


def _restriction_parses(isolation: tuple[bytes | None, bytes | None]) -> bool:
    """False (and a rate-limited log line) when the username starts with `exit=` but its node
    list does not parse: such a request is refused, never served without its restriction."""
    try:
        stream_restriction(isolation)
    except RestrictionError as exc:
        peer_log.warning("SOCKS request refused: bad exit= in username", error=str(exc)[:120])
        return False
    return True


async def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, RuntimeError):  # the client may be gone already
        await writer.drain()
        writer.close()

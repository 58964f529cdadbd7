"""The SOCKS listener: drives `proto.socks.SocksServer` for each connection and hands streams to circuits.

Replies mean what they say: 0x02 the exit's policy refused, 0x04 the name did not resolve or
the host is unreachable, 0x05 the destination refused, 0x06 nothing answered in time,
0x07/0x08 unsupported command or address type (decided by the parser).  A request is retried
on a circuit through another exit when the first exit refused or failed, within one deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import time

from onionmesh.errors import OnionmeshError
from onionmesh.proto.socks import SocksCommand, SocksRejected, SocksReply, SocksRequest, SocksServer
from onionmesh.runtime.circuits import CircuitMgr, StreamFailed
from onionmesh.runtime.safelog import Sensitive, get_logger
from onionmesh.wire.relay_msg import EndReason, ResolvedType

log = get_logger("onionmesh.socks")

REQUEST_DEADLINE = 60.0
STREAM_TIMEOUT = 20.0
HANDSHAKE_TIMEOUT = 30.0
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


class SocksListener:
    def __init__(self, circuits: CircuitMgr, host: str, port: int) -> None:
        self.circuits = circuits
        self.host = host
        self.port = port
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, reuse_address=True, backlog=LISTEN_BACKLOG
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._conns):
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        with contextlib.suppress(OSError):
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        machine = SocksServer()
        try:
            request = await asyncio.wait_for(self._handshake(machine, reader, writer), HANDSHAKE_TIMEOUT)
            if request is None:
                return
            if request.command is SocksCommand.CONNECT:
                await self._connect(machine, request, reader, writer)
            else:
                await self._resolve(machine, request, writer)
        except (TimeoutError, ConnectionError, OSError):
            pass
        except Exception as exc:  # one broken request must never stop the listener
            log.error("socks connection failed: internal error", error=type(exc).__name__)
            writer.close()
        finally:
            self._conns.discard(writer)

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
    ) -> None:
        isolation = (request.username, request.password)
        deadline = time.monotonic() + REQUEST_DEADLINE
        self.circuits.ports_seen[request.port] = time.monotonic()
        code = SocksReply.GENERAL_FAILURE
        avoid: set[str] = set()
        for _attempt in range(MAX_ATTEMPTS):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                code = SocksReply.TTL_EXPIRED
                break
            try:
                if avoid:
                    handle = await asyncio.wait_for(
                        self.circuits.build(port=request.port, isolation=isolation, avoid=avoid), remaining
                    )
                else:
                    handle = await asyncio.wait_for(
                        self.circuits.get_circuit(request.port, isolation), remaining
                    )
                sid = await self.circuits.open_stream(
                    handle,
                    request.host,
                    request.port,
                    min(STREAM_TIMEOUT, max(1.0, deadline - time.monotonic())),
                )
            except StreamFailed as failed:
                code = END_TO_SOCKS.get(failed.reason, SocksReply.GENERAL_FAILURE)
                if failed.reason not in RETRY_ELSEWHERE:
                    break
                avoid.add(handle.exit.fingerprint)
                if failed.reason is not EndReason.EXITPOLICY:  # refusing by policy is no failure
                    self.circuits.policy.relay_failed(handle.exit.fingerprint)
                continue
            except TimeoutError:
                code = SocksReply.TTL_EXPIRED
                continue
            except (OnionmeshError, OSError) as exc:
                log.info("no circuit for stream", error=type(exc).__name__, detail=str(exc))
                code = SocksReply.GENERAL_FAILURE
                continue
            self._reply(machine, writer, SocksReply.SUCCEEDED)
            self.circuits.attach(handle, sid, reader, writer, machine.take_leftover())
            log.debug("stream attached", circuit=handle.number, host=Sensitive(request.host))
            return
        self._reply(machine, writer, code)
        await _close(writer)

    async def _resolve(
        self, machine: SocksServer, request: SocksRequest, writer: asyncio.StreamWriter
    ) -> None:
        code, answer = SocksReply.HOST_UNREACHABLE, None
        try:
            handle = await asyncio.wait_for(
                self.circuits.get_circuit(None, (request.username, request.password)), REQUEST_DEADLINE
            )
            resolved = await self.circuits.resolve(handle, request.host, STREAM_TIMEOUT)
            for kind, value, _ttl in resolved.answers:
                if request.command is SocksCommand.RESOLVE_PTR and kind is ResolvedType.HOSTNAME:
                    code, answer = SocksReply.SUCCEEDED, value
                    break
                if request.command is SocksCommand.RESOLVE and kind in (ResolvedType.IPV4, ResolvedType.IPV6):
                    code, answer = SocksReply.SUCCEEDED, str(ipaddress.ip_address(value))
                    break
        except StreamFailed as failed:
            code = END_TO_SOCKS.get(failed.reason, SocksReply.GENERAL_FAILURE)
        except TimeoutError:
            code = SocksReply.TTL_EXPIRED
        except (OnionmeshError, OSError):
            code = SocksReply.GENERAL_FAILURE
        self._reply(machine, writer, code, answer)
        await _close(writer)


async def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, RuntimeError):  # the client may be gone already
        await writer.drain()
        writer.close()

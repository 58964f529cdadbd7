"""What a SOCKS request asks for, carried out: CONNECT (retried through other exits), CONNECT to
NAME.onion (over its rendezvous circuit) and RESOLVE / RESOLVE_PTR; the listener (socks_server)
hands each parsed request here.

Replies mean what they say: 0x02 the exit's policy refused, 0x04 the name did not resolve or
the host is unreachable, 0x05 the destination refused, 0x06 nothing answered in time,
0x07/0x08 unsupported command or address type (decided by the parser).  A request is retried
on a circuit through another exit when the first exit refused or failed, within one deadline.
0x02 also answers a request that the node restrictions leave no exit for (ExitNodes, or a
username `exit={cc}` whose countries have no exit for the port) and one whose `exit=` username
does not parse: "not allowed by ruleset", the user's ruleset; never a silent other exit.

Round trips (docs/protocol.md §14.6): toward an exit that holds optimistic data, what the
application sends with or after its request goes behind BEGIN; and a CONNECT to a host:port the
chosen circuit connected to lately is answered with success at once (proto.early_reply), so a
failure after it can only close the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time

from onionmesh.directory.node_restrictions import RestrictionError
from onionmesh.directory.path_selection import RestrictedExitError
from onionmesh.errors import OnionConnectFailed, OnionmeshError
from onionmesh.proto.socks import SocksServer
from onionmesh.proto.socks_wire import SocksCommand, SocksReply, SocksRequest
from onionmesh.runtime.client.circuit_handle import CircuitHandle, stream_timeout
from onionmesh.runtime.client.circuit_manager import CircuitMgr, StreamFailed
from onionmesh.runtime.client.circuit_streams import ApplicationGone
from onionmesh.runtime.client.onion_client import OnionConnector
from onionmesh.runtime.client.path_policy import stream_restriction
from onionmesh.runtime.client.stream_status import StreamRecord, end_reasons
from onionmesh.runtime.loglimit import limited
from onionmesh.runtime.safelog import Sensitive, get_logger
from onionmesh.wire.relay_msg import EndReason, ResolvedType

log = get_logger("onionmesh.socks")
peer_log = limited(log)  # lines any local process can repeat at will: rate-limited (runtime.loglimit)

REQUEST_DEADLINE = 60.0
MAX_ATTEMPTS = 3

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


class SocksRequests:
    """Carries out the requests of one SOCKS listener on its circuits; each method answers the
    client (success or the reply code that says why not) and closes the socket unless it attached
    the socket to a stream."""

    def __init__(self, circuits: CircuitMgr, early_reply: bool = True) -> None:
        self.circuits = circuits
        self.onion: OnionConnector | None = None  # set by ClientNode: NAME.onion goes there, never to an exit
        # Answer success before CONNECTED where proto.early_reply allows it (docs/protocol.md §14.6)
        self.early_reply = early_reply
        self.answered_early = 0  # CONNECTs answered before CONNECTED (a count for tests and status)

    @staticmethod
    def _may_answer_early(handle: CircuitHandle, request: SocksRequest) -> bool:
        """An early success only on a general circuit whose exit holds optimistic data, for a
        host:port this circuit connected to lately (proto.early_reply: why these rules)."""
        return (
            handle.purpose == "general"
            and handle.circ.peer_optimistic
            and handle.recent.fresh(request.host, request.port, time.monotonic())
        )

    def reply(
        self,
        machine: SocksServer,
        writer: asyncio.StreamWriter,
        code: SocksReply,
        host: str | None = None,
        port: int = 0,
    ) -> None:
        """Answer the request with `code` (and the bound or resolved address)."""
        try:
            machine.reply(code, host, port)
        except OnionmeshError:
            # The answer does not fit the client's SOCKS version (an IPv6 address for SOCKS4):
            # a success without the address would be a lie.
            machine.reply(SocksReply.HOST_UNREACHABLE if code is SocksReply.SUCCEEDED else code)
        writer.write(machine.data_to_send())

    async def connect(
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
            self.reply(machine, writer, SocksReply.NOT_ALLOWED)
            await close_after_reply(writer)
            return False
        deadline = time.monotonic() + REQUEST_DEADLINE
        self.circuits.ports_seen[request.port] = time.monotonic()
        streams = self.circuits.streams
        # What the application sent behind its request, and while its stream was connecting:
        # optimistic data, sent again on a retry through another exit (at most EARLY_READ_MAX).
        pending = bytearray(machine.take_leftover())
        replied = False  # an early success went out: the application may be sending already
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
                timeout = min(stream_timeout(handle), max(1.0, deadline - time.monotonic()))
                early = not replied and self.early_reply and self._may_answer_early(handle, request)
                # After an early success, a retry's bytes wait for the new exit's CONNECTED: sent
                # behind BEGIN they would tell that exit what this client did on another circuit.
                optimistic = handle.circ.peer_optimistic and (early or (bool(pending) and not replied))
                sid = streams.begin_stream(handle, request.host, request.port, record, optimistic=optimistic)
                sent = streams.send_early(handle, sid, bytes(pending)) if optimistic else 0
                if early:
                    self.reply(machine, writer, SocksReply.SUCCEEDED)
                    replied = True
                    self.answered_early += 1
                if optimistic:
                    sent = await streams.wait_connected_reading(
                        handle, sid, request.host, request.port, timeout, reader, pending, sent, record
                    )
                else:
                    await streams.wait_connected(handle, sid, request.host, request.port, timeout, record)
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
            except ApplicationGone:
                status.failed(record, "MISC")
                writer.close()
                return False
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
            if not replied:
                self.reply(machine, writer, SocksReply.SUCCEEDED)
            streams.attach(handle, sid, reader, writer, bytes(pending[sent:]), record)
            log.debug("stream attached", circuit=handle.number, host=Sensitive(request.host))
            return True
        if replied:  # after an early success there is no reply left to give: the connection closes
            status.failed(record, *why)
            await close_after_reply(writer)
            return False
        status.failed(record, *why)
        self.reply(machine, writer, code)
        await close_after_reply(writer)
        return False

    async def connect_onion(
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
                self.reply(machine, writer, SocksReply.SUCCEEDED)
                self.circuits.streams.attach(handle, sid, reader, writer, machine.take_leftover(), record)
                return True
        status.failed(record, *why)
        self.reply(machine, writer, SocksReply(code))
        await close_after_reply(writer)
        return False

    async def resolve(
        self, machine: SocksServer, request: SocksRequest, writer: asyncio.StreamWriter, record: StreamRecord
    ) -> None:
        code, answer = SocksReply.HOST_UNREACHABLE, None
        status = self.circuits.streams.status
        if not _restriction_parses((request.username, request.password)):
            status.failed(record, "NOROUTE")
            self.reply(machine, writer, SocksReply.NOT_ALLOWED)
            await close_after_reply(writer)
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
        self.reply(machine, writer, code, answer)
        await close_after_reply(writer)


def _restriction_parses(isolation: tuple[bytes | None, bytes | None]) -> bool:
    """False (and a rate-limited log line) when the username starts with `exit=` but its node
    list does not parse: such a request is refused, never served without its restriction."""
    try:
        stream_restriction(isolation)
    except RestrictionError as exc:
        peer_log.warning("SOCKS request refused: bad exit= in username", error=str(exc)[:120])
        return False
    return True


async def close_after_reply(writer: asyncio.StreamWriter) -> None:
    """Close a client's socket once the reply has gone out (the listener's, too)."""
    with contextlib.suppress(OSError, RuntimeError):  # the client may be gone already
        await writer.drain()
        writer.close()

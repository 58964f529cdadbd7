"""The exit's side of a relay: open the streams circuits ask for, answer their RESOLVE requests.

`exit_rules.py` decides (policy, private addresses, resolution); this module acts on a circuit: it
connects, joins the connection to the stream, or ends the stream with the reason that decided.
Every stream holds a slot of `exit_limits.StreamLedger` from its BEGIN until it closes; a BEGIN
past a cap gets END RESOURCELIMIT before any resolve or connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Callable

from onionmesh.directory.exit_policy import is_private_address
from onionmesh.proto.events import BeginRequested, ResolveRequested
from onionmesh.runtime.loglimit import limited
from onionmesh.runtime.relay import exit_rules as exit_mod
from onionmesh.runtime.relay.circuit_entry import RelayCircuitEntry
from onionmesh.runtime.relay.exit_limits import StreamCaps, StreamLedger
from onionmesh.runtime.safelog import Sensitive, get_logger
from onionmesh.runtime.transport.stream_pump import StreamPump
from onionmesh.wire.relay_msg import EndReason, ResolvedType

log = get_logger("onionmesh.exit")
peer_log = limited(log)  # clients decide how often these happen: rate-limited (runtime.loglimit)


class ExitService:
    def __init__(
        self,
        rules: exit_mod.ExitRules | None,
        local_host_for: Callable[[str], str | None],
        count: Callable[[str], None],
        caps: StreamCaps | None = None,
    ) -> None:
        self.rules = rules  # None: not an exit
        self.local_host_for = local_host_for
        self.count = count
        self.streams = StreamLedger(caps or StreamCaps.derive())

    def _end(self, entry: RelayCircuitEntry, sid: int, reason: EndReason) -> None:
        if not entry.dead:
            entry.circ.end_stream(sid, reason)

    def _refused_at_cap(self, cap: str) -> None:
        """Count it (metrics: streams refused, by cap); warn at most once a minute (runtime.loglimit)."""
        self.count(f"streams_refused_{cap}")
        peer_log.warning(
            "exit streams refused at a cap (END RESOURCELIMIT)", cap=cap, open_streams=self.streams.total
        )

    async def begin(self, entry: RelayCircuitEntry, event: BeginRequested) -> None:
        sid, begin = event.stream_id, event.begin
        log.debug("stream requested", host=Sensitive(begin.host), port=begin.port)
        if self.rules is None or begin.host is None:  # proto.relay_circuit refuses host None first
            self._end(entry, sid, EndReason.EXITPOLICY)
            return
        slot = self.streams.admit(entry, entry.prev.link)
        if isinstance(slot, str):
            self._refused_at_cap(slot)
            self._end(entry, sid, EndReason.RESOURCELIMIT)
            return
        try:
            reader, writer, address = await exit_mod.connect(
                self.rules, begin.host, begin.port, begin.flags, self.local_host_for
            )
        except exit_mod.ExitRefused as refused:
            slot.release()
            self._end(entry, sid, refused.reason)
            return
        except BaseException:
            slot.release()
            raise
        if entry.dead or sid not in entry.circ.streams:
            slot.release()
            writer.close()
            return
        with contextlib.suppress(OSError):
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.count("streams_opened")
        pump = StreamPump(entry.circ, entry.streams, sid, reader, writer, on_close=slot.release)
        # Optimistic data the client sent behind its BEGIN goes to the destination first, in order.
        early = entry.circ.connected(sid, address)
        if early:
            self.count("streams_optimistic")
        for data in early:
            pump.deliver(data)
        pump.start()

    async def resolve(self, entry: RelayCircuitEntry, event: ResolveRequested) -> None:
        answers: tuple[tuple[ResolvedType, str, int], ...]
        try:
            answers = await self._answers(event.host)
        except (exit_mod.ExitRefused, OSError):
            answers = ((ResolvedType.ERROR_NONTRANSIENT, "", 0),)
        if not entry.dead:
            entry.circ.resolved(event.stream_id, answers)

    async def _answers(self, host: str) -> tuple[tuple[ResolvedType, str, int], ...]:
        rules = self.rules
        if rules is None:
            raise exit_mod.ExitRefused(EndReason.EXITPOLICY)
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            found = await exit_mod.resolve(host, local_only=rules.loopback_only, overrides=rules.overrides)
            # Private answers are dropped (Tor's ClientDNSRejectInternalAddresses, at the exit):
            # they would tell a client the exit's internal names, and no BEGIN may use them anyway.
            addrs = [a for a in found if rules.allow_private or not is_private_address(a)]
            if not addrs:
                raise exit_mod.ExitRefused(EndReason.RESOLVEFAILED) from None
            return tuple(
                (ResolvedType.IPV4 if ipaddress.ip_address(a).version == 4 else ResolvedType.IPV6, a, 60)
                for a in addrs[:16]
            )
        if rules.loopback_only and not ip.is_loopback:
            raise exit_mod.ExitRefused(EndReason.RESOLVEFAILED)
        if is_private_address(ip) and not rules.allow_private:
            raise exit_mod.ExitRefused(EndReason.EXITPOLICY)  # no names of our own network
        name, _ = await asyncio.get_running_loop().getnameinfo((str(ip), 0), socket.NI_NAMEREQD)
        return ((ResolvedType.HOSTNAME, name[:255], 60),)

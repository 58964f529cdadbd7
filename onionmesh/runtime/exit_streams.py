"""The exit's side of a relay: open the streams circuits ask for, answer their RESOLVE requests.

`exit.py` decides (policy, private addresses, resolution); this module acts on a circuit: it
connects, joins the connection to the stream, or ends the stream with the reason that decided.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from onionmesh.directory.exit_policy import is_private_address
from onionmesh.proto.events import BeginRequested, ResolveRequested
from onionmesh.runtime import exit as exit_mod
from onionmesh.runtime.safelog import Sensitive, get_logger
from onionmesh.runtime.stream_bridge import StreamBridge
from onionmesh.wire.relay_msg import EndReason, ResolvedType

if TYPE_CHECKING:
    from onionmesh.runtime.relay_switch import CircuitEntry

log = get_logger("onionmesh.exit")


class ExitService:
    def __init__(
        self,
        rules: exit_mod.ExitRules | None,
        local_host_for: Callable[[str], str | None],
        flush: Callable[[CircuitEntry], None],
        count: Callable[[str], None],
    ) -> None:
        self.rules = rules  # None: not an exit
        self.local_host_for = local_host_for
        self.flush = flush
        self.count = count

    async def begin(self, entry: CircuitEntry, event: BeginRequested) -> None:
        sid, begin = event.stream_id, event.begin
        log.debug("stream requested", host=Sensitive(begin.host), port=begin.port)
        try:
            if self.rules is None:
                raise exit_mod.ExitRefused(EndReason.EXITPOLICY)
            reader, writer, address = await exit_mod.connect(
                self.rules, begin.host, begin.port, begin.flags, self.local_host_for
            )
        except exit_mod.ExitRefused as refused:
            if not entry.dead:
                entry.circ.end_stream(sid, refused.reason)
                self.flush(entry)
            return
        if entry.dead or sid not in entry.circ.streams:
            writer.close()
            return
        with contextlib.suppress(OSError):
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.count("streams_opened")
        bridge = StreamBridge(entry.circ, sid, reader, writer, lambda: self.flush(entry))
        entry.bridges[sid] = bridge
        entry.circ.connected(sid, address)
        self.flush(entry)
        bridge.start()

    async def resolve(self, entry: CircuitEntry, event: ResolveRequested) -> None:
        answers: tuple[tuple[ResolvedType, str, int], ...]
        try:
            answers = await self._answers(event.host)
        except (exit_mod.ExitRefused, OSError):
            answers = ((ResolvedType.ERROR_NONTRANSIENT, "", 0),)
        if not entry.dead:
            entry.circ.resolved(event.stream_id, answers)
            self.flush(entry)

    async def _answers(self, host: str) -> tuple[tuple[ResolvedType, str, int], ...]:
        rules = self.rules
        if rules is None:
            raise exit_mod.ExitRefused(EndReason.EXITPOLICY)
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            addrs = await exit_mod.resolve(host, local_only=rules.loopback_only, overrides=rules.overrides)
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

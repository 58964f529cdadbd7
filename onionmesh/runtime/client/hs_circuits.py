"""Onion-service circuits, both sides: vanguards-lite paths and waiting for one message.

Every onion-service circuit (introduction, rendezvous; client and service) is built on a path
from `directory.vanguards.VanguardSet.path` (guard, a layer-2 vanguard, (a middle,) the last hop):
the guard is one of the node's primary entry guards that does not conflict with the last hop, so
the introduction or rendezvous point is never this node's first hop.  The vanguard set is the
node's own, persisted (runtime.client.vanguard_state).  Such circuits carry a `purpose` and never
take general SOCKS streams (`CircuitHandle.usable_for`).

`HsCircuits.expect` waits for the next HS message on a circuit (INTRO_ESTABLISHED, INTRODUCE_ACK,
RENDEZVOUS_ESTABLISHED, RENDEZVOUS2...), failing at once when the circuit closes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable
from pathlib import Path

from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.directory.path_selection import relays_conflict
from onionmesh.directory.vanguards import HsPurpose
from onionmesh.errors import HsCircuitClosed, NoHsPath
from onionmesh.rng import Rng
from onionmesh.runtime.client.circuit_handle import CircuitHandle
from onionmesh.runtime.client.circuit_manager import CircuitMgr
from onionmesh.runtime.client.hs_pool import HsCircuitPool
from onionmesh.runtime.client.vanguard_state import load_vanguards, save_vanguards
from onionmesh.wire.hs_cells import LinkSpec
from onionmesh.wire.relay_msg import LinkSpecType, RelayCommand, RelayMessage

# The HS_STATE Tor's control port shows for each purpose while it is being built.
PURPOSE_OF = {
    HsPurpose.CLIENT_INTRO: "hs_client_intro",
    HsPurpose.CLIENT_REND: "hs_client_rend",
    HsPurpose.SERVICE_INTRO: "hs_service_intro",
    HsPurpose.SERVICE_REND: "hs_service_rend",
}


def link_specs(desc: RelayDescriptor) -> tuple[LinkSpec, ...]:
    """A relay as INTRODUCE's link specifiers: its addresses and its Ed25519 identity."""
    out = []
    for host, port in desc.link_addresses[:2]:
        ip = ipaddress.ip_address(host)
        kind = LinkSpecType.IPV4 if ip.version == 4 else LinkSpecType.IPV6
        out.append(LinkSpec(kind, ip.packed + port.to_bytes(2, "big")))
    out.append(LinkSpec(LinkSpecType.ED25519_ID, desc.identity_pk))
    return tuple(out)


def identity_of(specs: tuple[LinkSpec, ...]) -> bytes | None:
    return next((s.data for s in specs if s.kind == LinkSpecType.ED25519_ID and len(s.data) == 32), None)


class HsCircuits:
    """The node's onion-service circuits (one per ClientNode, shared by its services and its client)."""

    def __init__(self, mgr: CircuitMgr, data_dir: Path | None, rng: Rng) -> None:
        self.mgr, self.rng, self.data_dir = mgr, rng, data_dir
        self.vanguards = load_vanguards(data_dir, rng)
        self._saved = [v.fingerprint for v in self.vanguards.vanguards]
        self._waiters: dict[int, asyncio.Queue[RelayMessage | None]] = {}
        mgr.listeners.append(self._circuit_event)
        self.pool = HsCircuitPool(mgr, self.vanguards, rng, self._save_vanguards)

    def _save_vanguards(self) -> None:
        now = [v.fingerprint for v in self.vanguards.vanguards]
        if now != self._saved:
            save_vanguards(self.data_dir, self.vanguards)
            self._saved = now

    def _circuit_event(self, what: str, handle: CircuitHandle) -> None:
        if what == "closed" and handle.number in self._waiters:
            self._waiters[handle.number].put_nowait(None)

    def relays(self) -> list[RelayDescriptor]:
        return self.mgr.relays()

    def choose_last_hop(self, avoid: set[str]) -> RelayDescriptor:
        """A relay for the last hop (an intro or rendezvous point) that none of our guards conflicts
        with (chosen as before, whatever the pre-built pool holds: docs/protocol.md §16)."""
        relays = self.relays()
        guards = self.mgr.policy.primary_guards(relays)
        by_fp = {r.fingerprint: r for r in relays}
        pool = [
            r for r in relays
            if r.fingerprint not in avoid and r.fingerprint not in guards
            and any(g in by_fp and not relays_conflict(by_fp[g], r) for g in guards)
        ]  # fmt: skip
        if not pool:
            raise NoHsPath("no relay can be an introduction or rendezvous point")
        return pool[self.rng.randbelow(len(pool))]

    async def build(
        self,
        purpose: HsPurpose,
        last_hop: RelayDescriptor,
        service_id: str | None,
        on_message: Callable[[RelayMessage], None] | None = None,
    ) -> CircuitHandle:
        """A circuit on a vanguards-lite path to `last_hop`, a pre-built one extended by one hop if
        one fits (runtime.client.hs_pool); HS messages go to a queue `expect` reads."""
        handle = await self.pool.take(purpose, last_hop, PURPOSE_OF[purpose], service_id)
        if handle is None:
            handle = await self._build_whole(purpose, last_hop, service_id)
        return self._attach(handle, on_message)

    async def _build_whole(
        self, purpose: HsPurpose, last_hop: RelayDescriptor, service_id: str | None
    ) -> CircuitHandle:
        relays = self.relays()
        if all(r.fingerprint != last_hop.fingerprint for r in relays):
            relays = [*relays, last_hop]
        guards = self.mgr.policy.primary_guards(relays)
        by_fp = {r.fingerprint: r for r in relays}
        guard = next((g for g in guards if g in by_fp and not relays_conflict(by_fp[g], last_hop)), None)
        if guard is None:
            raise NoHsPath("no guard fits this last hop")
        path = self.vanguards.path(purpose, relays, guard, last_hop.fingerprint, time.time(), self.rng)
        self._save_vanguards()
        return await self.mgr.build(
            path=path, hops=len(path), purpose=PURPOSE_OF[purpose], hs_service_id=service_id,
            wait_directory=False,
        )  # fmt: skip

    def _attach(
        self, handle: CircuitHandle, on_message: Callable[[RelayMessage], None] | None
    ) -> CircuitHandle:
        queue: asyncio.Queue[RelayMessage | None] = asyncio.Queue(maxsize=64)
        self._waiters[handle.number] = queue
        if handle.closed_reason is not None:
            queue.put_nowait(None)

        def take(msg: RelayMessage) -> None:
            if on_message is not None:
                on_message(msg)
            elif not queue.full():
                queue.put_nowait(msg)

        handle.on_message = take
        handle.circ.handled = frozenset(
            {
                RelayCommand.INTRO_ESTABLISHED,
                RelayCommand.INTRODUCE2,
                RelayCommand.INTRODUCE_ACK,
                RelayCommand.RENDEZVOUS_ESTABLISHED,
                RelayCommand.RENDEZVOUS2,
            }
        )
        return handle

    async def expect(self, handle: CircuitHandle, command: RelayCommand, timeout: float) -> RelayMessage:
        """The next HS message on `handle`: HsCircuitClosed if the circuit closes or sends another, or
        TimeoutError."""
        queue = self._waiters.get(handle.number)
        if queue is None or handle.closed_reason is not None:
            raise HsCircuitClosed(handle.closed_reason or "not an onion-service circuit")
        async with asyncio.timeout(timeout):
            msg = await queue.get()
        if msg is None:
            raise HsCircuitClosed(handle.closed_reason or "closed")
        if msg.command is not command:
            raise HsCircuitClosed(f"expected {command.name}, got {msg.command.name}")
        return msg

    def forget(self, handle: CircuitHandle) -> None:
        self._waiters.pop(handle.number, None)

    def close(self) -> None:
        self.pool.close()

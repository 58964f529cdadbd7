"""The client's bridges: first hops reached over WebSocket, known only from their bridge lines.

With bridges, every circuit's first hop is a bridge (bridges replace entry guards; the first
bridge that answers is used, the others are fallbacks, as Tor uses its bridges as guards).
A bridge is not in the DHT: the client learns its descriptor over the link itself
(DESCRIPTOR_GET, wire.bridge_cells), verified and pinned to the identity of its bridge line.
`CircuitMgr` asks this module for links to bridges and for the path constraints of each build.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from onionmesh.directory.bridge_line import BridgeLine
from onionmesh.directory.descriptor import RelayDescriptor, decode_and_verify
from onionmesh.errors import OnionmeshError
from onionmesh.rng import Rng
from onionmesh.runtime.safelog import get_logger
from onionmesh.runtime.transport.link import Link, LinkLimits, LinkOwner
from onionmesh.runtime.transport.websocket import open_ws_link
from onionmesh.wire.bridge_cells import DescriptorAssembler
from onionmesh.wire.cell import Cell, CellCommand

log = get_logger("onionmesh.bridges")

DESCRIPTOR_TIMEOUT = 10.0
REFRESH_BEFORE_EXPIRY = 600.0


class BridgeUser(LinkOwner[Any], Protocol):
    """What the bridge set needs of the client's circuit manager: it owns the links (and their
    budget), and opens a bridge's link through the set, sharing it like any first hop's."""

    @property
    def limits(self) -> LinkLimits: ...

    async def link_to_bridge(self, identity_pk: bytes) -> Link[Any]: ...


class _BridgeLinkOwner:
    """Takes DESCRIPTOR cells off a bridge link; everything else goes to the circuit manager."""

    def __init__(self, mgr: BridgeUser, waiter: asyncio.Future[bytes]) -> None:
        self.mgr = mgr
        self.waiter = waiter
        self.assembler = DescriptorAssembler()

    def cell_received(self, link: Link[Any], cell: Cell) -> None:
        if cell.command is CellCommand.DESCRIPTOR and cell.circ_id == 0:
            try:
                raw = self.assembler.feed(cell.payload)
            except OnionmeshError:
                link.close()
                return
            if raw is not None and not self.waiter.done():
                self.waiter.set_result(raw)
            return
        self.mgr.cell_received(link, cell)

    def link_closed(self, link: Link[Any]) -> None:
        if not self.waiter.done():
            self.waiter.set_exception(OSError("bridge link closed"))
        self.mgr.link_closed(link)

    def circuit_overflowed(self, slot: Any) -> None:
        self.mgr.circuit_overflowed(slot)

    def budget_exceeded(self) -> None:
        self.mgr.budget_exceeded()


class BridgeSet:
    def __init__(self, lines: list[BridgeLine], rng: Rng) -> None:
        if not lines:
            raise ValueError("no bridges")
        self.lines = {line.identity_pk: line for line in lines}
        self.rng = rng
        self.descriptors: dict[bytes, RelayDescriptor] = {}
        self._owners: dict[bytes, _BridgeLinkOwner] = {}
        self._failed: dict[bytes, float] = {}

    def owns(self, identity_pk: bytes) -> bool:
        return identity_pk in self.lines

    def fingerprints(self) -> set[str]:
        return {line.fingerprint for line in self.lines.values()}

    async def open_link(self, mgr: BridgeUser, identity_pk: bytes) -> Link[Any]:
        """A link to this bridge over WebSocket; its descriptor is fetched (again) on it."""
        line = self.lines[identity_pk]
        waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        owner = _BridgeLinkOwner(mgr, waiter)
        try:
            link = await open_ws_link(line, owner, self.rng, limits=mgr.limits)  # the client's budget
            link.send_cell(Cell(0, CellCommand.DESCRIPTOR_GET))
            async with asyncio.timeout(DESCRIPTOR_TIMEOUT):
                raw = await waiter
            desc = decode_and_verify(raw, time.time())
            if desc.identity_pk != identity_pk:
                link.close()
                raise OSError("the bridge sent a descriptor of another relay")
        except (OSError, TimeoutError, OnionmeshError) as exc:
            self._failed[identity_pk] = time.monotonic()
            log.info("bridge unreachable", error=type(exc).__name__)  # which one: not at default level
            raise OSError(f"cannot use bridge: {type(exc).__name__}") from None
        self.descriptors[identity_pk] = desc
        self._failed.pop(identity_pk, None)
        return link

    async def _fresh(self, mgr: BridgeUser) -> list[RelayDescriptor]:
        """Descriptors of bridges that answered, opening links to those not known (yet)."""
        now = time.time()
        for identity_pk in self._order():
            desc = self.descriptors.get(identity_pk)
            if desc is not None and desc.usable_until - REFRESH_BEFORE_EXPIRY > now:
                continue
            try:
                await mgr.link_to_bridge(identity_pk)
            except OSError:
                continue
            if identity_pk in self.descriptors:
                break  # one usable bridge is enough for this build
        return [
            self.descriptors[pk]
            for pk in self._order()
            if pk in self.descriptors and self.descriptors[pk].usable_until > now
        ]

    def _order(self) -> list[bytes]:
        """The bridges in the order of their lines, those that failed lately last."""
        return sorted(self.lines, key=lambda pk: self._failed.get(pk, 0.0))

    async def constrain(
        self,
        mgr: BridgeUser,
        relays: list[RelayDescriptor],
        hops: int,
        via: list[str] | None,
        exit_fp: str | None,
    ) -> tuple[list[RelayDescriptor], list[str] | None, str | None]:
        """The relays and forced hops for one build: hop 1 is a bridge (the exit of a 1-hop circuit)."""
        bridges = await self._fresh(mgr)
        if not bridges:
            raise OSError("no bridge is reachable")
        first = bridges[0]
        others = [r for r in relays if r.identity_pk not in self.lines]
        pool = [*others, first]
        if hops == 1:
            return pool, None, exit_fp or first.fingerprint
        rest = [fp for fp in via or [] if fp.upper() not in self.fingerprints()]
        return pool, [first.fingerprint, *rest], exit_fp

"""A client circuit as the rest of the client sees it: its path, link, streams and life times.

`CircuitMgr` (runtime/client/circuit_manager.py) creates and drives these; the SOCKS listener, the control
API, metrics and the status page read them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.directory.path_selection import exit_accepts_port
from onionmesh.errors import StreamFailed as StreamFailed  # re-exported: circuits imports it from here
from onionmesh.proto.client_circuit import CircuitState, ClientCircuit
from onionmesh.proto.early_reply import RecentTargets
from onionmesh.proto.events import BeginRequested, StreamEvent
from onionmesh.proto.rtt import scaled_timeout
from onionmesh.runtime.transport.link import CircuitSlot, Link
from onionmesh.runtime.transport.stream_pump import StreamGroup
from onionmesh.wire.relay_msg import RelayMessage

STREAM_TIMEOUT = 20.0  # BEGIN or RESOLVE waits at least this long for its answer ...
STREAM_TIMEOUT_MAX = 60.0  # ... and at most this (the SOCKS request's own deadline)
EXIT_CONNECT_TIME = 10.0  # what an exit may spend connecting (runtime.relay.exit_rules.CONNECT_TIMEOUT)
MAX_DIRTINESS = 600.0  # a circuit takes new streams for 10 minutes (Tor's MaxCircuitDirtiness)
MAX_STREAMS_PER_CIRCUIT_SOFT = 256
NO_ISOLATION: tuple[bytes | None, bytes | None] = (None, None)  # a SOCKS request without username/password


class UdpRouter(Protocol):
    """Who carries a circuit's UDP flows (runtime.client.socks_udp.UdpAssociation)."""

    def owns(self, handle: CircuitHandle, sid: int) -> bool: ...
    def route(self, handle: CircuitHandle, event: object) -> None: ...
    def circuit_closed(self, handle: CircuitHandle) -> None: ...


@dataclass(eq=False)
class CircuitHandle:
    number: int
    circ: ClientCircuit
    link: Link[CircuitHandle]
    path: list[RelayDescriptor]
    isolation: object
    created_at: float = field(default_factory=time.monotonic)
    built_at: float | None = None
    dirty_since: float | None = None
    closed_reason: str | None = None
    build_waiter: asyncio.Future[None] | None = None
    extended: asyncio.Event = field(default_factory=asyncio.Event)
    pending: dict[int, asyncio.Future[object]] = field(default_factory=dict)
    pumps: StreamGroup = field(default_factory=StreamGroup)  # its streams joined to SOCKS sockets
    # Events for streams that are connected but not yet joined to their socket (the destination
    # may speak first: DATA and END can arrive in the same batch as CONNECTED).
    unattached: dict[int, list[StreamEvent]] = field(default_factory=dict)
    hop_times: list[float] = field(default_factory=list)
    # "host:port" of each open stream, for the Tor control port's STREAM lines (never logged)
    stream_targets: dict[int, str] = field(default_factory=dict)
    slot: CircuitSlot[CircuitHandle] | None = None  # its entry in the link's table; the link pulls its cells
    # What the circuit is for (Tor's PURPOSE=): "general" carries SOCKS streams; onion-service
    # circuits ("hs_client_intro", "hs_client_rend", "hs_service_intro", "hs_service_rend") never do.
    purpose: str = "general"
    hs_service_id: str | None = None  # the onion service it serves or reaches (Tor's REND_QUERY=)
    hs_state: str | None = None  # Tor's HS_STATE= (e.g. "HSCI_CONNECTING", "HSSR_JOINED")
    # Onion services: the runtime's taker of MessageForHandler (INTRO_ESTABLISHED, INTRODUCE2,
    # RENDEZVOUS2...) and, on a service's rendezvous circuit, of BEGIN from the client.
    on_message: Callable[[RelayMessage], None] | None = None
    on_begin: Callable[[BeginRequested], None] | None = None
    udp: UdpRouter | None = None  # the SOCKS UDP association whose flows this circuit carries
    # host:port this circuit connected to lately: an early SOCKS success is allowed for those
    # (proto.early_reply)
    recent: RecentTargets = field(default_factory=RecentTargets)

    def __post_init__(self) -> None:
        self.slot = self.link.attach(self.circ.circ_id, self, self.circ.cells_to_send)
        self.circ.on_output = self.slot.wake

    @property
    def exit(self) -> RelayDescriptor:
        return self.path[-1]

    def usable_for(self, port: int | None, isolation: object, now: float) -> bool:
        return (
            self.circ.state is CircuitState.OPEN
            and self.purpose == "general"
            and self.closed_reason is None
            and len(self.circ.hops) == len(self.path)
            and self.isolation == isolation
            and (self.dirty_since is None or now - self.dirty_since < MAX_DIRTINESS)
            and len(self.circ.streams) < MAX_STREAMS_PER_CIRCUIT_SOFT
            and exit_accepts_port(self.exit, port)
        )


def stream_timeout(handle: CircuitHandle) -> float:
    """How long BEGIN (or RESOLVE) may wait for its answer: the exit's connect plus four round
    trips of this circuit (its congestion control's estimate, else its build's last hop), at
    least STREAM_TIMEOUT (enough on any short path), at most STREAM_TIMEOUT_MAX."""
    rtt = handle.circ.flow.ewma_rtt or handle.circ.rtt_hint
    return scaled_timeout(
        rtt, rounds=4, base=EXIT_CONNECT_TIME, floor=STREAM_TIMEOUT, ceiling=STREAM_TIMEOUT_MAX
    )

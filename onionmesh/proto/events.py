"""Events that the circuit state machines hand to the runtime (frozen, past tense)."""

from __future__ import annotations

from dataclasses import dataclass

from onionmesh.proto.dht_events import DhtAnswerReceived, DhtRpcRequested
from onionmesh.wire.relay_msg import Begin, EndReason, Extend, RelayMessage, ResolvedType


@dataclass(frozen=True, slots=True)
class CircuitExtended:
    hops: int


@dataclass(frozen=True, slots=True)
class StreamConnected:
    stream_id: int
    address: str | None


@dataclass(frozen=True, slots=True)
class StreamDataReceived:
    stream_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class StreamEnded:
    stream_id: int
    reason: EndReason


@dataclass(frozen=True, slots=True)
class StreamResolved:
    stream_id: int
    answers: tuple[tuple[ResolvedType, str, int], ...]


@dataclass(frozen=True, slots=True)
class SendWindowOpened:
    """Flow-control credit arrived; stream_id 0 means the whole circuit."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class BeginRequested:
    stream_id: int
    begin: Begin


@dataclass(frozen=True, slots=True)
class ResolveRequested:
    stream_id: int
    host: str


@dataclass(frozen=True, slots=True)
class UdpConnectRequested:
    """CONNECT_UDP at the exit: open a connected UDP flow (wire.udp_msg)."""

    stream_id: int
    begin: Begin


@dataclass(frozen=True, slots=True)
class DatagramReceived:
    """One DATAGRAM on an open UDP flow (either end)."""

    stream_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class ExtendRequested:
    extend: Extend


@dataclass(frozen=True, slots=True)
class MessageForHandler:
    """At a relay: a message that terminates here and that a handler registered for its command
    takes (the runtime's seam for new relay roles, e.g. joining two circuits)."""

    message: RelayMessage


# One union per machine, consumed with `match`: what either end's streams see, what the client's
# circuit reports, what a relay's circuit asks of the world.
StreamEvent = StreamDataReceived | SendWindowOpened | StreamEnded
ClientEvent = (
    CircuitExtended | StreamConnected | StreamResolved | DhtAnswerReceived | DatagramReceived | StreamEvent
)
RelayEvent = (
    ExtendRequested
    | BeginRequested
    | ResolveRequested
    | DhtRpcRequested
    | MessageForHandler
    | StreamEvent
    | UdpConnectRequested
    | DatagramReceived
)
CircuitEvent = ClientEvent | RelayEvent

"""Events that the circuit state machines hand to the runtime (frozen, past tense)."""

from __future__ import annotations

from dataclasses import dataclass

from onionmesh.wire.relay_msg import Begin, EndReason, Extend, ResolvedType


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
class ExtendRequested:
    extend: Extend

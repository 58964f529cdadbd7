"""Chunked answers inside circuits: the one framing shared by DIR_DATA and DHT_ANSWER.

An answer longer than one relay message travels as several bodies (docs/protocol.md §9.13, §15.4)

    body = status u8 | flags u8 (bit 0: more chunks follow) | vec16 chunk (<= CHUNK_MAX)

whose chunks concatenate to one payload.  Status 0 is OK in every such answer; any other status is
one body with no chunk and no "more".  wire.dir_msg and wire.dht_rpc name their own status enums,
limits and error names; the framing, splitting and reassembly live here once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

from onionmesh.errors import RemoteProtocolError
from onionmesh.wire.buffer import Buffer
from onionmesh.wire.relay_msg import RELAY_BODY_MAX, _decoding

MORE = 0x01
CHUNK_MAX = RELAY_BODY_MAX - 4  # status, flags, length u16
OK = 0

S = TypeVar("S", bound=enum.IntEnum)


@dataclass(frozen=True, slots=True)
class ChunkBody(Generic[S]):
    """One body of a chunked answer; a subclass sets STATUS and `decode = decoder("NAME")`."""

    STATUS: ClassVar[type[enum.IntEnum]]

    status: S
    more: bool = False
    chunk: bytes = b""

    def encode(self) -> bytes:
        if len(self.chunk) > CHUNK_MAX:
            raise ValueError("chunk too long")
        buf = Buffer().push_u8(self.status).push_u8(MORE if self.more else 0)
        return buf.push_vec16(self.chunk).getvalue()


def _pull(cls: type[ChunkBody], buf: Buffer) -> ChunkBody:
    status = cls.STATUS(buf.pull_u8())
    flags = buf.pull_u8()
    if flags & ~MORE:
        raise ValueError("unknown flags")
    chunk = buf.pull_vec16()
    if len(chunk) > CHUNK_MAX or ((flags & MORE or chunk) and status != OK):
        raise ValueError("only an OK answer carries data")
    return cls(status, bool(flags & MORE), chunk)


def decoder(name: str):
    """The `decode` classmethod of a ChunkBody subclass: errors read "malformed NAME"."""
    return _decoding(name)(_pull)


def split(cls: type[ChunkBody[S]], status: S, payload: bytes = b"") -> list[bytes]:
    """The bodies of one answer: `payload` in chunks if OK, else one empty body."""
    if status != OK or not payload:
        return [cls(status).encode()]
    chunks = [payload[i : i + CHUNK_MAX] for i in range(0, len(payload), CHUNK_MAX)]
    return [cls(status, i < len(chunks) - 1, c).encode() for i, c in enumerate(chunks)]


class Assembler(Generic[S]):
    """Joins chunks per request id, at most `limit` bytes per answer and `max_pending` partial
    answers at once (a peer cannot make it hold more); `feed` returns (status, payload) when one
    is complete."""

    def __init__(self, limit: int, max_pending: int, what: str) -> None:
        self.limit = limit
        self.max_pending = max_pending
        self.what = what
        self._parts: dict[int, bytearray] = {}

    def feed(self, request_id: int, body: ChunkBody[S]) -> tuple[S, bytes] | None:
        parts = self._parts.pop(request_id, bytearray())
        parts += body.chunk
        if len(parts) > self.limit:
            raise RemoteProtocolError(f"{self.what} too long")
        if body.more:
            if len(self._parts) >= self.max_pending:
                raise RemoteProtocolError(f"too many partial {self.what}s")
            self._parts[request_id] = parts
            return None
        return body.status, bytes(parts)

    def forget(self, request_id: int) -> None:
        self._parts.pop(request_id, None)


__all__ = ["CHUNK_MAX", "MORE", "Assembler", "ChunkBody", "decoder", "split"]

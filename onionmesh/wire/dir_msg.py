"""Directory documents inside circuits: the bodies of DIR_GET and DIR_DATA (docs/protocol.md §7.2).

A client fetches its directory from a few directory guards over one-hop circuits (as Tor's
BEGIN_DIR), never by contacting every relay (docs/directory-design.md §3.5, issue 23).  The relay
message's stream_id is the request id (never 0).

    DIR_GET  = kind u8 | epoch u32 | from_digest (32) | bucket u8                 38 bytes
               kind: 1 SNAPSHOT, 2 DIFF (from `from_digest`), 3 HEAD, 4 SUMMARY, 5 BUCKET (`bucket`);
               epoch 0: the newest the source has
    DIR_DATA = status u8 | flags u8 (bit 0: more chunks follow) | vec16 chunk
               status 0 OK, 1 NOT_FOUND, 2 BUSY, 3 REFUSED; the chunks of an OK answer concatenate to
               one signed document (directory.dir_list)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from onionmesh.errors import RemoteProtocolError
from onionmesh.wire.buffer import Buffer
from onionmesh.wire.relay_msg import RELAY_BODY_MAX, _decoding

DIR_GET_LEN = 38
MORE = 0x01
CHUNK_MAX = RELAY_BODY_MAX - 4  # status, flags, length u16
MAX_DOC = 16 * 1024 * 1024 + 4096  # directory.dir_list's MAX_BODY and its envelope
KINDS = range(1, 6)


class DirStatus(enum.IntEnum):
    OK = 0
    NOT_FOUND = 1  # no such document (e.g. no diff from that digest: fetch a SNAPSHOT)
    BUSY = 2  # rate-limited: try another source
    REFUSED = 3


@dataclass(frozen=True, slots=True)
class DirGet:
    kind: int
    epoch: int = 0
    from_digest: bytes = bytes(32)
    bucket: int = 0

    def encode(self) -> bytes:
        if self.kind not in KINDS or len(self.from_digest) != 32 or not 0 <= self.bucket <= 255:
            raise ValueError("bad DIR_GET")
        buf = Buffer().push_u8(self.kind).push_u32(self.epoch).push_bytes(self.from_digest)
        return buf.push_u8(self.bucket).getvalue()

    @_decoding("DIR_GET")
    def decode(cls, buf: Buffer) -> DirGet:
        kind = buf.pull_u8()
        if kind not in KINDS:
            raise ValueError("unknown document kind")
        return cls(kind, buf.pull_u32(), buf.pull_bytes(32), buf.pull_u8())


@dataclass(frozen=True, slots=True)
class DirData:
    status: DirStatus
    more: bool = False
    chunk: bytes = b""

    def encode(self) -> bytes:
        if len(self.chunk) > CHUNK_MAX:
            raise ValueError("chunk too long")
        buf = Buffer().push_u8(self.status).push_u8(MORE if self.more else 0)
        return buf.push_vec16(self.chunk).getvalue()

    @_decoding("DIR_DATA")
    def decode(cls, buf: Buffer) -> DirData:
        status = DirStatus(buf.pull_u8())
        flags = buf.pull_u8()
        if flags & ~MORE:
            raise ValueError("unknown flags")
        chunk = buf.pull_vec16()
        if len(chunk) > CHUNK_MAX or ((flags & MORE or chunk) and status is not DirStatus.OK):
            raise ValueError("bad DIR_DATA")
        return cls(status, bool(flags & MORE), chunk)


def data_bodies(status: DirStatus, doc: bytes = b"") -> list[bytes]:
    """The DIR_DATA bodies of one answer."""
    if status is not DirStatus.OK or not doc:
        return [DirData(status).encode()]
    chunks = [doc[i : i + CHUNK_MAX] for i in range(0, len(doc), CHUNK_MAX)]
    return [DirData(status, i < len(chunks) - 1, c).encode() for i, c in enumerate(chunks)]


class DocAssembler:
    """Joins DIR_DATA chunks per request id, at most `limit` bytes per document; `feed` returns
    (status, document) when one is complete."""

    def __init__(self, limit: int = MAX_DOC, max_pending: int = 16) -> None:
        self.limit = limit
        self.max_pending = max_pending
        self._parts: dict[int, bytearray] = {}

    def feed(self, request_id: int, data: DirData) -> tuple[DirStatus, bytes] | None:
        parts = self._parts.pop(request_id, bytearray())
        parts += data.chunk
        if len(parts) > self.limit:
            raise RemoteProtocolError("directory document too long")
        if data.more:
            if len(self._parts) >= self.max_pending:
                raise RemoteProtocolError("too many partial directory documents")
            self._parts[request_id] = parts
            return None
        return data.status, bytes(parts)

    def forget(self, request_id: int) -> None:
        self._parts.pop(request_id, None)


__all__ = ["DIR_GET_LEN", "DirData", "DirGet", "DirStatus", "DocAssembler", "data_bodies"]

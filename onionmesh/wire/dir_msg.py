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

from onionmesh.wire.buffer import Buffer
from onionmesh.wire.chunked import Assembler, ChunkBody, decoder, split
from onionmesh.wire.relay_msg import _decoding

DIR_GET_LEN = 38
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


class DirData(ChunkBody[DirStatus]):
    """One DIR_DATA body (the framing: wire.chunked)."""

    __slots__ = ()
    STATUS = DirStatus
    decode = decoder("DIR_DATA")


def data_bodies(status: DirStatus, doc: bytes = b"") -> list[bytes]:
    """The DIR_DATA bodies of one answer."""
    return split(DirData, status, doc)


class DocAssembler(Assembler[DirStatus]):
    """Joins DIR_DATA chunks per request id, at most `limit` bytes per document."""

    def __init__(self, limit: int = MAX_DOC, max_pending: int = 16) -> None:
        super().__init__(limit, max_pending, "directory document")


__all__ = ["DIR_GET_LEN", "DirData", "DirGet", "DirStatus", "DocAssembler", "data_bodies"]

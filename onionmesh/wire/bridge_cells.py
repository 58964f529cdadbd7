"""Link-level descriptor exchange: how a client learns a bridge's descriptor from the bridge itself.

A bridge is not in the DHT, so a client that holds only its bridge line (address, identity key,
secret path) asks over the freshly opened link, which already pinned the bridge's identity:

    DESCRIPTOR_GET  circ_id 0, empty payload
    DESCRIPTOR      circ_id 0, payload = flags u8 (bit 0: more follows) | vec16 chunk

The descriptor (at most MAX_DESCRIPTOR_LEN bytes) travels in as many DESCRIPTOR cells as it
needs; the client verifies it against the identity key of the bridge line.
"""

from __future__ import annotations

from onionmesh.errors import RemoteProtocolError, Truncated
from onionmesh.wire.buffer import Buffer
from onionmesh.wire.cell import CELL_PAYLOAD_LEN

# The largest signed descriptor any wire carries (here, and as a DHT value); directory.descriptor
# enforces it when encoding and decoding.
MAX_DESCRIPTOR_LEN = 2048
MORE = 0x01
CHUNK_MAX = CELL_PAYLOAD_LEN - 3  # flags u8 + length u16


def descriptor_payloads(raw: bytes) -> list[bytes]:
    """The DESCRIPTOR cell payloads that carry `raw`."""
    if not 0 < len(raw) <= MAX_DESCRIPTOR_LEN:
        raise ValueError("descriptor length out of range")
    chunks = [raw[i : i + CHUNK_MAX] for i in range(0, len(raw), CHUNK_MAX)]
    return [
        Buffer().push_u8(MORE if i < len(chunks) - 1 else 0).push_vec16(c).getvalue()
        for i, c in enumerate(chunks)
    ]


class DescriptorAssembler:
    """Collects DESCRIPTOR payloads; `feed` returns the whole descriptor once the last chunk came."""

    def __init__(self) -> None:
        self._parts = bytearray()

    def feed(self, payload: bytes) -> bytes | None:
        buf = Buffer(payload)
        try:
            flags = buf.pull_u8()
            chunk = buf.pull_vec16()
        except Truncated as exc:
            raise RemoteProtocolError("malformed DESCRIPTOR cell") from exc
        if flags & ~MORE or not chunk:
            raise RemoteProtocolError("malformed DESCRIPTOR cell")
        if any(buf.pull_rest()):
            raise RemoteProtocolError("DESCRIPTOR cell padding is not zero")
        self._parts += chunk
        if len(self._parts) > MAX_DESCRIPTOR_LEN:
            raise RemoteProtocolError("descriptor too long")
        if flags & MORE:
            return None
        out, self._parts = bytes(self._parts), bytearray()
        return out

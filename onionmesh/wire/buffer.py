"""A read/write byte buffer shared by every codec (after aioquic's `Buffer`).

Reading past the end raises `Truncated` ("need more bytes"); codecs turn values that are
present but invalid into `RemoteProtocolError`.
"""

from __future__ import annotations

from onionmesh.errors import RemoteProtocolError, Truncated


class Buffer:
    """Cursor over immutable input (`pull_*`) or a growing output (`push_*`)."""

    __slots__ = ("_data", "_out", "_pos")

    def __init__(self, data: bytes | bytearray | memoryview = b"") -> None:
        self._data = bytes(data)
        self._pos = 0
        self._out = bytearray()

    # --- reading -------------------------------------------------------------------------
    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    @property
    def position(self) -> int:
        return self._pos

    def eof(self) -> bool:
        return self._pos >= len(self._data)

    def pull_bytes(self, n: int) -> bytes:
        if n < 0:
            raise RemoteProtocolError("negative length")
        end = self._pos + n
        if end > len(self._data):
            raise Truncated(f"need {end - len(self._data)} more bytes")
        out = self._data[self._pos : end]
        self._pos = end
        return out

    def pull_u8(self) -> int:
        return self.pull_bytes(1)[0]

    def pull_u16(self) -> int:
        return int.from_bytes(self.pull_bytes(2), "big")

    def pull_u32(self) -> int:
        return int.from_bytes(self.pull_bytes(4), "big")

    def pull_u64(self) -> int:
        return int.from_bytes(self.pull_bytes(8), "big")

    def pull_vec8(self) -> bytes:
        """A byte string prefixed by its u8 length."""
        return self.pull_bytes(self.pull_u8())

    def pull_vec16(self) -> bytes:
        """A byte string prefixed by its u16 length."""
        return self.pull_bytes(self.pull_u16())

    def pull_rest(self) -> bytes:
        return self.pull_bytes(self.remaining)

    def expect_end(self) -> None:
        """Reject trailing bytes where a structure must fill its input exactly."""
        if self.remaining:
            raise RemoteProtocolError(f"{self.remaining} trailing bytes")

    # --- writing -------------------------------------------------------------------------
    def push_bytes(self, b: bytes) -> Buffer:
        self._out += b
        return self

    def push_u8(self, v: int) -> Buffer:
        self._out += v.to_bytes(1, "big")
        return self

    def push_u16(self, v: int) -> Buffer:
        self._out += v.to_bytes(2, "big")
        return self

    def push_u32(self, v: int) -> Buffer:
        self._out += v.to_bytes(4, "big")
        return self

    def push_u64(self, v: int) -> Buffer:
        self._out += v.to_bytes(8, "big")
        return self

    def push_vec8(self, b: bytes) -> Buffer:
        if len(b) > 0xFF:
            raise ValueError("vec8 longer than 255 bytes")
        return self.push_u8(len(b)).push_bytes(b)

    def push_vec16(self, b: bytes) -> Buffer:
        if len(b) > 0xFFFF:
            raise ValueError("vec16 longer than 65535 bytes")
        return self.push_u16(len(b)).push_bytes(b)

    def getvalue(self) -> bytes:
        return bytes(self._out)

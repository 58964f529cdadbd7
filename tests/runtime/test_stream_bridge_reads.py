"""How much a stream bridge reads from its socket per turn, over a real loopback socket: a stream
alone on its circuit reads whole link records (READ_CELLS_ALONE cells), one with siblings reads
READ_CELLS per turn so that they interleave finely.  The circuit end is a recording stand-in."""

from __future__ import annotations

import asyncio

import pytest

from onionmesh.runtime.stream_bridge import READ_CELLS, READ_CELLS_ALONE, StreamBridge
from onionmesh.wire.relay_msg import RELAY_BODY_MAX

SIZE = 2 * 1024 * 1024


class RecordingEnd:
    """The part of CircuitEndpoint a bridge's upstream side uses; always has credit."""

    def __init__(self, streams: int) -> None:
        self.streams = {sid: object() for sid in range(1, streams + 1)}
        self.received = 0
        self.ended = asyncio.Event()

    def can_send(self, stream_id: int) -> bool:
        return True

    def send_data(self, stream_id: int, data: bytes) -> int:
        assert len(data) <= RELAY_BODY_MAX
        self.received += len(data)
        return len(data)

    def end_stream(self, stream_id: int, reason: object) -> None:
        self.ended.set()


@pytest.mark.parametrize(("siblings", "cells"), [(0, READ_CELLS_ALONE), (1, READ_CELLS)])
async def test_read_size_follows_whether_the_stream_is_alone(siblings: int, cells: int) -> None:
    async def source(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(bytes(SIZE))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(source, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    asked: list[int] = []
    read = reader.read

    async def recording_read(n: int = -1) -> bytes:
        asked.append(n)
        await asyncio.sleep(0.002)  # let the socket fill the buffer, as a busy relay would
        return await read(n)

    reader.read = recording_read  # type: ignore[method-assign]
    end = RecordingEnd(1 + siblings)
    bridge = StreamBridge(end, 1, reader, writer, flush=lambda: None)  # type: ignore[arg-type]
    bridge.start()
    try:
        await asyncio.wait_for(end.ended.wait(), 10)
    finally:
        bridge.close()
        server.close()
        await server.wait_closed()
    assert end.received == SIZE  # every byte went into the circuit
    assert set(asked) == {RELAY_BODY_MAX * cells}

"""StreamPump stamps when its buffered data began to wait with an injectable clock, and the
memory guard destroys the circuit whose stream data waited longest: no patching of `time`."""

from __future__ import annotations

import asyncio

from onionmesh.proto.scheduler import QueueBudget
from onionmesh.runtime.transport import memory_guard as oom
from onionmesh.runtime.transport.stream_pump import StreamGroup, StreamPump


class Transport:
    def __init__(self) -> None:
        self.buffered = 0

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return self.buffered


class Writer:
    """A socket whose peer reads only when the test says so: `transport.buffered` is its backlog."""

    def __init__(self) -> None:
        self.transport = Transport()
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)
        self.transport.buffered += len(data)


class End:
    def __init__(self) -> None:
        self.streams = {1: None}
        self.consumed = 0

    def data_consumed(self, stream_id: int, cells: int) -> None:
        self.consumed += cells


async def test_buffered_since_follows_the_injected_clock_and_decides_the_oom_victim() -> None:
    now = [100.0]
    ends, writers = [End(), End()], [Writer(), Writer()]
    old, young = (
        StreamPump(end, StreamGroup(), 1, asyncio.StreamReader(), w, clock=lambda: now[0])  # type: ignore[arg-type]
        for end, w in zip(ends, writers, strict=True)
    )
    assert old.buffered_since == young.buffered_since == 100.0

    now[0] = 200.0
    old.deliver(b"a" * 1000)  # written at once: the socket now holds it, waiting since 200
    await asyncio.sleep(0)
    assert writers[0].written == [b"a" * 1000] and old.buffered_since == 200.0
    now[0] = 300.0
    old.deliver(b"b" * 1000)  # more behind unread data: still waiting since 200
    young.deliver(b"c" * 1000)  # the first data of this one: since 300
    await asyncio.sleep(0)
    assert (old.buffered_since, young.buffered_since) == (200.0, 300.0)
    assert (old.buffered_bytes, young.buffered_bytes) == (2000, 1000)
    assert ends[0].consumed == 2 and ends[1].consumed == 1, "credit goes back: the socket took it"

    destroyed: list[str] = []
    guard = oom.MemoryGuard(
        QueueBudget(2500),  # 3000 bytes wait in stream buffers: over the limit
        lambda: [],
        lambda: [("old", [old]), ("young", [young])],
        lambda link, cid: None,
        destroyed.append,  # type: ignore[arg-type]
        clock=lambda: now[0],
    )
    assert guard.queued_bytes() == 3000
    assert guard.check() == 1 and destroyed == ["old"], "the data that waited longest goes first"

    writers[0].transport.buffered = 0  # the reader caught up; the next data waits from now
    now[0] = 400.0
    old.deliver(b"d")
    await asyncio.sleep(0)
    assert old.buffered_since == 400.0

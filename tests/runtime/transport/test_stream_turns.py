"""Streams of one circuit take turns at its window in the order they were last served, over
real loopback sockets: a stream that finds credit does not jump ahead of a sibling that has
waited for it, and nothing is left waiting when credit remains or a sibling closes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from onionmesh.proto.events import SendWindowOpened
from onionmesh.runtime.transport.stream_pump import StreamGroup, StreamPump


class Flow:
    def __init__(self) -> None:
        self.open = False

    def can_send(self) -> bool:
        return self.open


class End:
    """The part of CircuitEndpoint that the turn logic reads."""

    def __init__(self, n: int) -> None:
        self.streams = dict.fromkeys(range(1, n + 1))
        self.flow = Flow()

    def can_send(self, stream_id: int) -> bool:
        return self.flow.open


@pytest.fixture
async def sockets() -> AsyncIterator[list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pairs = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
    yield pairs
    for _, writer in pairs:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_a_stream_with_credit_waits_behind_a_sibling_served_less_recently(sockets) -> None:  # type: ignore[no-untyped-def]
    end = End(3)
    group = StreamGroup()
    for sid, (r, w) in enumerate(sockets, 1):
        StreamPump(end, group, sid, r, w)  # type: ignore[arg-type]
    a, b, c = group.pumps[1], group.pumps[2], group.pumps[3]
    a.last_turn, b.last_turn, c.last_turn = 1, 2, 9  # c was served most recently
    waiting_a = asyncio.create_task(a._take_turn())  # the window is closed: a queues
    waiting_b = asyncio.create_task(b._take_turn())
    await asyncio.sleep(0.01)
    assert group.turn_queue == {a, b} and not waiting_a.done()
    end.flow.open = True  # credit arrives, but c's task runs before the SENDME's wake-ups
    c_turn = asyncio.create_task(c._take_turn())
    await asyncio.sleep(0.01)
    assert not c_turn.done() and c in group.turn_queue  # c did not jump the queue
    order: list[int] = []
    for sid, task in ((1, waiting_a), (2, waiting_b), (3, c_turn)):
        task.add_done_callback(lambda t, sid=sid: order.append(sid))
    group.route(SendWindowOpened(0))  # the SENDME wakes the queue, oldest first
    assert await asyncio.wait_for(asyncio.gather(waiting_a, waiting_b, c_turn), 1) == [True, True, True]
    assert order == [1, 2, 3]  # least recently served first, c last
    assert not group.turn_queue


async def test_closing_a_queued_stream_passes_the_turn_on(sockets) -> None:  # type: ignore[no-untyped-def]
    end = End(2)
    group = StreamGroup()
    (ra, wa), (rb, wb), _ = sockets
    a = StreamPump(end, group, 1, ra, wa)  # type: ignore[arg-type]
    b = StreamPump(end, group, 2, rb, wb)  # type: ignore[arg-type]
    a.last_turn, b.last_turn = 1, 2
    waiting_a = asyncio.create_task(a._take_turn())
    await asyncio.sleep(0.01)
    end.flow.open = True
    waiting_b = asyncio.create_task(b._take_turn())
    await asyncio.sleep(0.01)
    assert not waiting_b.done()  # behind a, which has not woken yet
    a.close()  # a leaves without a turn: b must not be left waiting for a SENDME
    assert await asyncio.wait_for(waiting_b, 1) is True
    assert await asyncio.wait_for(waiting_a, 1) is False

"""Join a TCP socket to a circuit stream, in both directions, under flow control.

Used at both ends: the client joins a SOCKS connection to its stream, the exit joins its
connection to the destination.  A circuit's pumps form a `StreamGroup`, which routes the
circuit's stream events to them and keeps their turns at the circuit window.  A pump never
flushes: what it hands the circuit is queued there, and the circuit's link pulls it.
Reading from the socket stops while the stream or circuit
window is closed (so memory stays bounded by the windows); credit for received data goes
back to the sender only after the socket has taken it (so a slow reader slows the sender).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable

from onionmesh.proto.endpoint import CircuitEndpoint
from onionmesh.proto.events import SendWindowOpened, StreamDataReceived, StreamEnded, StreamEvent
from onionmesh.wire.relay_msg import RELAY_BODY_MAX, EndReason

WRITE_HIGH_WATER = 256 * 1024
READ_CELLS = 16
_turns = itertools.count(1)  # stamps each stream's last turn at the circuit window


class StreamGroup:
    """The pumps of one circuit, by stream id, and their queue for the circuit window."""

    __slots__ = ("pumps", "turn_queue")

    def __init__(self) -> None:
        self.pumps: dict[int, StreamPump] = {}
        self.turn_queue: set[StreamPump] = set()  # pumps waiting for the circuit window

    def __len__(self) -> int:
        return len(self.pumps)

    def values(self) -> list[StreamPump]:
        return list(self.pumps.values())

    def route(self, event: StreamEvent) -> None:
        """Hand a circuit's stream event to its pump (both ends do the same)."""
        match event:
            case StreamDataReceived(stream_id, data):
                pump = self.pumps.get(stream_id)
                if pump is not None:
                    pump.deliver(data)
            case SendWindowOpened(0):
                # The circuit window opened for every stream, and the first woken takes the first
                # credit: wake the streams that waited longest since their last turn first (round
                # robin; Tor starts at a random stream).  200 streams of 1 MiB in
                # bench/throughput.py: Jain's index 0.79-0.99 over six runs that way, 0.93-1.00
                # over eleven in turn, both measured while the client still spread such streams
                # over 2-3 circuits.
                targets = list(self.pumps.values())
                if len(targets) > 1:
                    targets.sort(key=_last_turn)
                for target in targets:
                    target.window_open.set()
            case SendWindowOpened(stream_id):
                pump = self.pumps.get(stream_id)
                if pump is not None:
                    pump.window_open.set()
            case StreamEnded(stream_id):
                ended = self.pumps.pop(stream_id, None)
                if ended is not None:
                    ended.remote_closed()

    def close_all(self, *, remote: bool) -> None:
        """The circuit is gone: `remote` lets each pump finish writing what arrived first."""
        pumps, self.pumps = self.pumps, {}
        for pump in pumps.values():
            if remote:
                pump.remote_closed()
            else:
                pump.close()


class StreamPump:
    def __init__(
        self,
        endpoint: CircuitEndpoint,
        group: StreamGroup,
        stream_id: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_close: Callable[[], None] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        # when buffered data began to wait (the OOM policy's staleness): the loop's clock unless
        # a test injects one
        self.clock = clock or asyncio.get_running_loop().time
        self.on_close = on_close
        self.endpoint = endpoint
        self.stream_id = stream_id
        self.reader = reader
        self.writer = writer
        self.group = group
        group.pumps[stream_id] = self
        self.window_open = asyncio.Event()
        self.last_turn = 0  # when this stream last sent (a _turns stamp; 0: never)
        self.closed = False
        self._unacked = 0
        self._pending: list[bytes] = []  # delivered this loop turn, not yet written
        self.buffered_since = self.clock()  # when buffered data last began to wait
        self._draining = False
        self._task: asyncio.Task[None] | None = None
        self._drain_task: asyncio.Task[None] | None = None

    def start(self, early_data: bytes = b"") -> None:
        self._task = asyncio.create_task(self._upstream(early_data), name="stream-upstream")

    async def _wait_window(self) -> bool:
        while not self.endpoint.can_send(self.stream_id):
            if self.closed or self.stream_id not in self.endpoint.streams:
                return False
            self.window_open.clear()
            await self.window_open.wait()
        return True

    async def _take_turn(self) -> bool:
        """Wait until this stream may send: the windows are open and no sibling that was served
        less recently is queued for the circuit window.  Without the queue, a stream whose read
        happened to complete while the window had credit sent ahead of siblings that had waited
        for it (200 streams on one circuit: some got twice the turns of others)."""
        queue = self.group.turn_queue
        while True:
            if self.closed or self.stream_id not in self.endpoint.streams:
                self._leave_queue()
                return False
            circuit_open = self.endpoint.flow.can_send()
            if not self.endpoint.can_send(self.stream_id) and circuit_open:
                # only this stream's own window is closed: wait for it outside the queue
                self._leave_queue()
            else:
                first = min(queue, key=_last_turn) if queue else self
                if circuit_open and (first is self or first.last_turn >= self.last_turn):
                    queue.discard(self)
                    return True
                queue.add(self)
            self.window_open.clear()
            await self.window_open.wait()

    def _leave_queue(self) -> None:
        """Out of the circuit's turn queue; if the window has credit, the next in line goes."""
        queue = self.group.turn_queue
        queue.discard(self)
        if queue and self.endpoint.flow.can_send():
            min(queue, key=_last_turn).window_open.set()

    async def _send(self, data: bytes) -> bool:
        off = 0
        if not await self._take_turn():
            return False
        while off < len(data):
            if not await self._wait_window():
                return False
            off += self.endpoint.send_data(self.stream_id, data[off : off + RELAY_BODY_MAX])
        self.last_turn = next(_turns)
        self._leave_queue()
        return True

    async def _upstream(self, early_data: bytes) -> None:
        """Socket → circuit."""
        reason = EndReason.DONE
        try:
            if early_data and not await self._send(early_data):
                return
            while not self.closed:
                if not await self._wait_window():
                    return
                # Up to READ_CELLS per read: what one read brings goes out as one link record,
                # and every hop forwards records of that size (16 KiB per read cost 7 % of bulk
                # throughput in syscalls and wake-ups against 64 KiB, measured).
                data = await self.reader.read(RELAY_BODY_MAX * READ_CELLS)
                if not data:
                    break
                if not await self._send(data):
                    return
                # read() returns buffered data without yielding: without this, one stream with a
                # fast source would fill the whole circuit window before its siblings read once.
                await asyncio.sleep(0)
        except (ConnectionError, OSError):
            reason = EndReason.CONNRESET
        if not self.closed:
            self.endpoint.end_stream(self.stream_id, reason)
            self.close()

    def deliver(self, data: bytes) -> None:
        """Circuit → socket.  Cells that arrive in one event loop turn go out in one write (a link
        read brings up to 128 of them), and credit goes back once the socket buffer has room."""
        if self.closed:
            return
        transport = self.writer.transport
        if transport is None or transport.is_closing():  # our side hung up: tell the far end now
            self.endpoint.end_stream(self.stream_id, EndReason.CONNRESET)
            self.close()
            return
        self._pending.append(data)
        if len(self._pending) == 1:
            asyncio.get_running_loop().call_soon(self._write_pending)

    def _write_pending(self) -> None:
        if self.closed or not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        cells = len(self._pending)
        self._pending.clear()
        if self._write_buffered() == 0:
            self.buffered_since = self.clock()
        try:
            self.writer.write(data)
        except (ConnectionError, RuntimeError):
            self.remote_closed()
            return
        self._unacked += cells
        if self._write_buffered() < WRITE_HIGH_WATER:
            self._ack()
        elif not self._draining:
            self._draining = True
            self._drain_task = asyncio.create_task(self._drain_then_ack(), name="stream-drain")

    def _write_buffered(self) -> int:
        transport = self.writer.transport
        return 0 if transport is None or transport.is_closing() else transport.get_write_buffer_size()

    @property
    def buffered_bytes(self) -> int:
        """Bytes this stream holds in memory, both ways: from the circuit, not yet taken by the
        socket, and read from the socket, not yet sent (they count toward the OOM limit)."""
        read_ahead = len(getattr(self.reader, "_buffer", b""))  # asyncio keeps no public count
        return self._write_buffered() + read_ahead

    def _ack(self) -> None:
        n, self._unacked = self._unacked, 0
        if n:
            self.endpoint.data_consumed(self.stream_id, n)

    async def _drain_then_ack(self) -> None:
        try:
            await self.writer.drain()
        except (ConnectionError, RuntimeError):
            self.remote_closed()
            return
        finally:
            self._draining = False
        if not self.closed:
            self._ack()

    def _closed_once(self) -> None:
        if self.group.pumps.get(self.stream_id) is self:
            del self.group.pumps[self.stream_id]
        if self.on_close is not None:
            callback, self.on_close = self.on_close, None
            callback()

    def remote_closed(self) -> None:
        """The far end ended the stream (or the circuit died): finish writing, then close."""
        if self.closed:
            return
        self.closed = True
        self._leave_queue()
        self._closed_once()
        self.window_open.set()
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
        with contextlib.suppress(OSError, RuntimeError):  # the socket may be gone already
            if self._pending:  # what arrived before the END still goes out, then EOF
                self.writer.write(b"".join(self._pending))
                self._pending.clear()
            if self.writer.can_write_eof():
                self.writer.write_eof()
        asyncio.get_running_loop().call_later(0, self._close_writer)

    def _close_writer(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            self.writer.close()

    def close(self) -> None:
        self.closed = True
        self._leave_queue()
        self._closed_once()
        self.window_open.set()
        self._close_writer()
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()


def _last_turn(pump: StreamPump) -> int:
    return pump.last_turn

"""Streams on the client's circuits: BEGIN and wait for CONNECTED, RESOLVE, and joining a
connected stream to its SOCKS socket.  `CircuitMgr` (runtime/client/circuit_manager.py) owns one
and carries the cells; what a stream queues, the circuit's link pulls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from onionmesh.errors import StreamFailed
from onionmesh.proto.events import SendWindowOpened, StreamConnected, StreamResolved
from onionmesh.runtime.client.circuit_handle import CircuitHandle
from onionmesh.runtime.client.stream_status import StreamRecord, StreamStatus
from onionmesh.runtime.transport.stream_pump import StreamPump
from onionmesh.wire.relay_msg import RELAY_BODY_MAX, EndReason

StreamListener = Callable[[str, CircuitHandle, int], None]


class CircuitStreams:
    """The stream half of the client's circuits; `emit` tells listeners of attached and closed streams."""

    def __init__(self, emit: StreamListener) -> None:
        self.emit = emit
        self.status = StreamStatus()  # the SOCKS requests in Tor's terms (STREAM events)

    async def open_stream(
        self, handle: CircuitHandle, host: str, port: int, timeout: float, record: StreamRecord | None = None
    ) -> int:
        """BEGIN, then wait for CONNECTED (StreamFailed if the exit ended the stream instead)."""
        sid = self.begin_stream(handle, host, port, record)
        await self.wait_connected(handle, sid, host, port, timeout, record)
        return sid

    def begin_stream(
        self,
        handle: CircuitHandle,
        host: str,
        port: int,
        record: StreamRecord | None = None,
        *,
        optimistic: bool = False,
    ) -> int:
        """Send BEGIN; `optimistic`: the stream may carry data before CONNECTED (send_early)."""
        # On a rendezvous circuit the BEGIN names only the port, as Tor's: the service never learns
        # which name the client typed (the name stays here, for the control port's stream list).
        sid = handle.circ.begin(
            None if handle.purpose == "hs_client_rend" else host, port, optimistic=optimistic
        )
        handle.stream_targets[sid] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if record is not None:
            self.status.sent(record, handle, handle.number)
        if handle.dirty_since is None:
            handle.dirty_since = time.monotonic()
        return sid

    @staticmethod
    def send_early(handle: CircuitHandle, sid: int, data: bytes) -> int:
        """Optimistic data right behind BEGIN: as much of `data` as the stream may send before
        CONNECTED (proto.endpoint.OPTIMISTIC_CELLS cells); returns the bytes taken."""
        sent = 0
        while sent < len(data) and handle.circ.can_send(sid):
            sent += handle.circ.send_data(sid, data[sent : sent + RELAY_BODY_MAX])
        return sent

    async def wait_connected(
        self,
        handle: CircuitHandle,
        sid: int,
        host: str,
        port: int,
        timeout: float,
        record: StreamRecord | None = None,
    ) -> None:
        """Wait for the exit's CONNECTED to the BEGIN `sid`; a TimeoutError ends the stream."""
        waiter: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        handle.pending[sid] = waiter
        try:
            async with asyncio.timeout(timeout):
                connected = await waiter
            if record is not None and isinstance(connected, StreamConnected) and connected.address:
                self.status.remap(record, connected.address)
        except TimeoutError:
            handle.pending.pop(sid, None)
            handle.stream_targets.pop(sid, None)
            handle.circ.end_stream(sid, EndReason.TIMEOUT)
            handle.recent.failed(host, port)
            raise
        except BaseException as exc:
            handle.stream_targets.pop(sid, None)
            if isinstance(exc, StreamFailed):
                handle.recent.failed(host, port)
            raise
        handle.recent.succeeded(host, port, time.monotonic())

    def attach_early(
        self,
        handle: CircuitHandle,
        sid: int,
        host: str,
        port: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        early: bytes,
        timeout: float,
        record: StreamRecord | None = None,
    ) -> StreamPump:
        """Join a stream to its socket before CONNECTED (an early SOCKS success, proto.early_reply):
        its data goes out optimistically, the rest once CONNECTED comes; if END comes instead, or
        nothing within `timeout`, the application sees its connection closed."""
        handle.early[sid] = (host, port)
        pump = self.attach(handle, sid, reader, writer, early, record)
        asyncio.get_running_loop().call_later(timeout, self._early_overdue, handle, sid, pump)
        return pump

    @staticmethod
    def _early_overdue(handle: CircuitHandle, sid: int, pump: StreamPump) -> None:
        target = handle.early.pop(sid, None)
        if target is None:  # connected, or ended already
            return
        handle.recent.failed(*target)
        if handle.closed_reason is None:
            handle.circ.end_stream(sid, EndReason.TIMEOUT)
        pump.remote_closed()

    @staticmethod
    def early_connected(handle: CircuitHandle, sid: int) -> None:
        """CONNECTED for a stream answered early: it may send all it has now."""
        host, port = handle.early.pop(sid)
        handle.recent.succeeded(host, port, time.monotonic())
        handle.pumps.route(SendWindowOpened(sid))

    @staticmethod
    def early_failed(handle: CircuitHandle, sid: int) -> None:
        """END before CONNECTED for a stream answered early: its socket closes (the pump, on the
        END), and the next request to that host:port on this circuit waits for CONNECTED."""
        host, port = handle.early.pop(sid)
        handle.recent.failed(host, port)

    async def resolve(
        self, handle: CircuitHandle, host: str, timeout: float, record: StreamRecord | None = None
    ) -> StreamResolved:
        sid = handle.circ.resolve(host)
        if record is not None:
            self.status.sent(record, handle, handle.number)
        waiter: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        handle.pending[sid] = waiter
        async with asyncio.timeout(timeout):
            result = await waiter
        assert isinstance(result, StreamResolved)
        return result

    def _stream_closed(self, handle: CircuitHandle, sid: int, record: StreamRecord | None) -> None:
        self.emit("closed", handle, sid)
        handle.stream_targets.pop(sid, None)
        if record is not None:
            self.status.closed(record)

    def attach(
        self,
        handle: CircuitHandle,
        sid: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        early: bytes,
        record: StreamRecord | None = None,
    ) -> StreamPump:
        pump = StreamPump(
            handle.circ,
            handle.pumps,
            sid,
            reader,
            writer,
            on_close=lambda: self._stream_closed(handle, sid, record),
        )
        self.emit("attached", handle, sid)
        if record is not None:
            self.status.succeeded(record)
        pump.start(early)
        for event in handle.unattached.pop(sid, []):
            handle.pumps.route(event)
        return pump

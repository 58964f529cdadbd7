"""Streams on the client's circuits: BEGIN and wait for CONNECTED, RESOLVE, and joining a
connected stream to its SOCKS socket.  `CircuitMgr` (runtime/client/circuit_manager.py) owns one
and carries the cells; what a stream queues, the circuit's link pulls.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from onionmesh.errors import ApplicationGone, StreamFailed
from onionmesh.proto.endpoint import OPTIMISTIC_CELLS
from onionmesh.proto.events import StreamConnected, StreamResolved
from onionmesh.runtime.client.circuit_handle import CircuitHandle
from onionmesh.runtime.client.stream_status import StreamRecord, StreamStatus
from onionmesh.runtime.transport.stream_pump import StreamPump
from onionmesh.wire.relay_msg import RELAY_BODY_MAX, EndReason

StreamListener = Callable[[str, CircuitHandle, int], None]
# What the proxy reads from an application while it waits for CONNECTED: what optimistic data can
# carry (proto.endpoint.OPTIMISTIC_CELLS cells), so it is bounded per request.
EARLY_READ_MAX = OPTIMISTIC_CELLS * RELAY_BODY_MAX


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

    async def wait_connected_reading(
        self,
        handle: CircuitHandle,
        sid: int,
        host: str,
        port: int,
        timeout: float,
        reader: asyncio.StreamReader,
        pending: bytearray,
        sent: int,
        record: StreamRecord | None = None,
    ) -> int:
        """Wait for CONNECTED to an optimistic BEGIN, and meanwhile send what the application
        writes (appended to `pending`, of which `sent` bytes went already) behind it as
        optimistic data, while the stream may (Tor's proposal 181); the bytes of `pending` sent.
        The caller keeps `pending` to send again through another exit if this one fails.
        ApplicationGone if the application's socket failed; else as wait_connected."""
        waiting = asyncio.ensure_future(self.wait_connected(handle, sid, host, port, timeout, record))
        reading: asyncio.Future[bytes] | None = None
        eof = False
        try:
            while not waiting.done() and not eof and len(pending) < EARLY_READ_MAX:
                stream = handle.circ.streams.get(sid)
                if stream is None or stream.early_left <= 0:
                    break
                reading = asyncio.ensure_future(reader.read(EARLY_READ_MAX - len(pending)))
                await asyncio.wait({waiting, reading}, return_when=asyncio.FIRST_COMPLETED)
                if not reading.done():
                    break  # CONNECTED (or the end): the pump reads the rest
                try:
                    data = reading.result()
                except (ConnectionError, OSError) as exc:
                    raise ApplicationGone from exc
                reading = None
                eof = not data
                pending += data
                sent += self.send_early(handle, sid, bytes(pending[sent:]))
        except BaseException:
            if not waiting.done():  # nobody will attach this stream: end it
                waiting.cancel()
                handle.pending.pop(sid, None)
                if handle.closed_reason is None:
                    handle.circ.end_stream(sid, EndReason.DONE)
            raise
        finally:
            if reading is not None and not reading.done():
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reading
        await waiting
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

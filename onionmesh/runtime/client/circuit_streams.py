"""Streams on the client's circuits: BEGIN and wait for CONNECTED, RESOLVE, and joining a
connected stream to its SOCKS socket.  `CircuitMgr` (runtime/client/circuit_manager.py) owns one
and carries the cells; what a stream queues, the circuit's link pulls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from onionmesh.proto.events import StreamConnected, StreamResolved
from onionmesh.runtime.client.circuit_handle import CircuitHandle
from onionmesh.runtime.client.stream_status import StreamRecord, StreamStatus
from onionmesh.runtime.transport.stream_pump import StreamPump
from onionmesh.wire.relay_msg import EndReason

StreamListener = Callable[[str, CircuitHandle, int], None]


class CircuitStreams:
    """The stream half of the client's circuits; `emit` tells listeners of attached and closed streams."""

    def __init__(self, emit: StreamListener) -> None:
        self.emit = emit
        self.status = StreamStatus()  # the SOCKS requests in Tor's terms (STREAM events)

    async def open_stream(
        self, handle: CircuitHandle, host: str, port: int, timeout: float, record: StreamRecord | None = None
    ) -> int:
        # On a rendezvous circuit the BEGIN names only the port, as Tor's: the service never learns
        # which name the client typed (the name stays here, for the control port's stream list).
        sid = handle.circ.begin(None if handle.purpose == "hs_client_rend" else host, port)
        handle.stream_targets[sid] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if record is not None:
            self.status.sent(record, handle, handle.number)
        if handle.dirty_since is None:
            handle.dirty_since = time.monotonic()
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
            raise
        except BaseException:
            handle.stream_targets.pop(sid, None)
            raise
        return sid

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

"""Streams on the client's circuits: BEGIN and wait for CONNECTED, RESOLVE, and joining a
connected stream to its SOCKS socket.  `CircuitMgr` (runtime/client/circuit_manager.py) carries the cells.
"""

from __future__ import annotations

import asyncio
import time

from onionmesh.proto.events import StreamResolved
from onionmesh.runtime.client.circuit_handle import CircuitHandle
from onionmesh.runtime.transport.stream_pump import StreamPump, route_stream_event
from onionmesh.wire.relay_msg import EndReason


class CircuitStreams:
    """The stream half of `CircuitMgr`, which provides `_flush` and `_emit_stream`."""

    def _flush(self, handle: CircuitHandle) -> None:
        raise NotImplementedError

    def _emit_stream(self, what: str, handle: CircuitHandle, stream_id: int) -> None:
        raise NotImplementedError

    async def open_stream(self, handle: CircuitHandle, host: str, port: int, timeout: float) -> int:
        sid = handle.circ.begin(host, port)
        handle.stream_targets[sid] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if handle.dirty_since is None:
            handle.dirty_since = time.monotonic()
        waiter: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        handle.pending[sid] = waiter
        self._flush(handle)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            handle.pending.pop(sid, None)
            handle.stream_targets.pop(sid, None)
            handle.circ.end_stream(sid, EndReason.TIMEOUT)
            self._flush(handle)
            raise
        except BaseException:
            handle.stream_targets.pop(sid, None)
            raise
        return sid

    async def resolve(self, handle: CircuitHandle, host: str, timeout: float) -> StreamResolved:
        sid = handle.circ.resolve(host)
        waiter: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        handle.pending[sid] = waiter
        self._flush(handle)
        async with asyncio.timeout(timeout):
            result = await waiter
        assert isinstance(result, StreamResolved)
        return result

    def _stream_closed(self, handle: CircuitHandle, sid: int) -> None:
        self._emit_stream("closed", handle, sid)
        handle.stream_targets.pop(sid, None)

    def attach(
        self,
        handle: CircuitHandle,
        sid: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        early: bytes,
    ) -> StreamPump:
        bridge = StreamPump(
            handle.circ,
            sid,
            reader,
            writer,
            lambda: self._flush(handle),
            on_close=lambda: self._stream_closed(handle, sid),
        )
        handle.bridges[sid] = bridge
        self._emit_stream("attached", handle, sid)
        bridge.start(early)
        for event in handle.unattached.pop(sid, []):
            route_stream_event(handle.bridges, event)
        self._flush(handle)
        return bridge

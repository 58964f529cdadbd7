"""Streams on the client's circuits: BEGIN and wait for CONNECTED, RESOLVE, and joining a
connected stream to its SOCKS socket.  `CircuitMgr` (runtime/client/circuit_manager.py) owns one
and carries the cells; what a stream queues, the circuit's link pulls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from onionmesh.proto.events import StreamResolved
from onionmesh.runtime.client.circuit_handle import CircuitHandle
from onionmesh.runtime.transport.stream_pump import StreamPump
from onionmesh.wire.relay_msg import EndReason

StreamListener = Callable[[str, CircuitHandle, int], None]


class CircuitStreams:
    """The stream half of the client's circuits; `emit` tells listeners of attached and closed streams."""

    def __init__(self, emit: StreamListener) -> None:
        self.emit = emit

    async def open_stream(self, handle: CircuitHandle, host: str, port: int, timeout: float) -> int:
        # On a rendezvous circuit the BEGIN names only the port, as Tor's: the service never learns
        # which name the client typed (the name stays here, for the control port's stream list).
        sid = handle.circ.begin(None if handle.purpose == "hs_client_rend" else host, port)
        handle.stream_targets[sid] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if handle.dirty_since is None:
            handle.dirty_since = time.monotonic()
        waiter: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        handle.pending[sid] = waiter
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            handle.pending.pop(sid, None)
            handle.stream_targets.pop(sid, None)
            handle.circ.end_stream(sid, EndReason.TIMEOUT)
            raise
        except BaseException:
            handle.stream_targets.pop(sid, None)
            raise
        return sid

    async def resolve(self, handle: CircuitHandle, host: str, timeout: float) -> StreamResolved:
        sid = handle.circ.resolve(host)
        waiter: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        handle.pending[sid] = waiter
        async with asyncio.timeout(timeout):
            result = await waiter
        assert isinstance(result, StreamResolved)
        return result

    def _stream_closed(self, handle: CircuitHandle, sid: int) -> None:
        self.emit("closed", handle, sid)
        handle.stream_targets.pop(sid, None)

    def attach(
        self,
        handle: CircuitHandle,
        sid: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        early: bytes,
    ) -> StreamPump:
        pump = StreamPump(
            handle.circ,
            handle.pumps,
            sid,
            reader,
            writer,
            on_close=lambda: self._stream_closed(handle, sid),
        )
        self.emit("attached", handle, sid)
        pump.start(early)
        for event in handle.unattached.pop(sid, []):
            handle.pumps.route(event)
        return pump

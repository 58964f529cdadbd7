"""Streams into an onion service: a BEGIN on a joined rendezvous circuit, to the port map's target.

The BEGIN names only the port (docs/protocol.md §7.4.1); the port map gives an IP literal
(usually loopback: no DNS, no exit policy).  An unmapped port gets END DONE, Tor's reason; more
streams than `max_streams` END RESOURCELIMIT; a target that refuses or does not answer in 10 s
END CONNECTREFUSED; else CONNECTED and a stream pump, as at an exit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from onionmesh.proto.events import BeginRequested
from onionmesh.runtime.client.circuit_handle import CircuitHandle
from onionmesh.runtime.client.hs_service_config import OnionServiceSpec, target_host
from onionmesh.runtime.transport.stream_pump import StreamPump
from onionmesh.wire.relay_msg import EndReason

CONNECT_TIMEOUT = 10.0


class ServiceStreams:
    """The service's side of its streams: one per BEGIN, connected to the mapped target."""

    def __init__(self, spec: OnionServiceSpec, count: Callable[[str], None]) -> None:
        self.spec, self.count = spec, count
        self.ports = {p.virt_port: (target_host(p.target_host), p.target_port) for p in spec.ports}
        self.tasks: set[asyncio.Task[None]] = set()

    def begin(self, handle: CircuitHandle, event: BeginRequested) -> None:
        """A BEGIN on `handle` (from the CircuitMgr's dispatch: must never raise)."""
        target = self.ports.get(event.begin.port)
        sid = event.stream_id
        if target is None:
            # END DONE as Tor's (not a reason that says "closed port").  The circuit stays open
            # (Tor's HiddenServiceAllowUnknownPorts 1 on this point): closing it made Chromium's
            # page load fail (presumably its HTTPS-upgrade try of 443 beside the port-80 stream).
            self.count("stream_unmapped_port")
            handle.circ.end_stream(sid, EndReason.DONE)
            return
        if self.spec.max_streams and len(handle.circ.streams) > self.spec.max_streams:
            self.count("stream_over_max")
            handle.circ.end_stream(sid, EndReason.RESOURCELIMIT)
            return
        task = asyncio.create_task(self._connect(handle, sid, target), name="onion-stream")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _connect(self, handle: CircuitHandle, sid: int, target: tuple[str, int]) -> None:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                reader, writer = await asyncio.open_connection(*target)
        except (OSError, TimeoutError):
            self.count("stream_connect_failed")
            if handle.closed_reason is None:
                handle.circ.end_stream(sid, EndReason.CONNECTREFUSED)
            return
        if handle.closed_reason is not None or sid not in handle.circ.streams:
            writer.close()
            return
        handle.circ.connected(sid)
        self.count("streams")
        StreamPump(handle.circ, handle.pumps, sid, reader, writer).start()

    def cancel(self) -> list[asyncio.Task[None]]:
        """Cancel the connects in progress; the tasks, to be awaited."""
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        return tasks

"""One stream fills a long path (issue 20 item 3), over real sockets.

The client's link to its first hop goes through a small TCP proxy in this test that holds every
byte for DELAY seconds each way (no root: loopback only), so the circuit's round trip is at least
2 x DELAY.  A lone download's stream window then grows past the initial 500 cells (proto.flow's
receiver autotuning); the bytes arrive exact; and nothing is timed: the window is read, not a
duration.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from onionmesh.proto.flow import STREAM_WINDOW, STREAM_WINDOW_MAX
from onionmesh.runtime.client import circuit_manager
from tests.helpers.mesh import http_get_via_socks, start_mesh, stop_mesh

DELAY = 0.1  # seconds, each way, on the client's first link
SIZE = 24 << 20


class DelayProxy:
    """Forwards TCP to `target`, delivering every chunk DELAY s after it was read (order kept)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> tuple[str, int]:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[:2]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            loop = asyncio.get_running_loop()
            while True:
                due, data = await queue.get()
                if not data:
                    break
                await asyncio.sleep(max(0.0, due - loop.time()))
                dst.write(data)
                await dst.drain()

        sender = asyncio.create_task(deliver())
        loop = asyncio.get_running_loop()
        try:
            while data := await src.read(1 << 16):
                queue.put_nowait((loop.time() + DELAY, data))
        except (ConnectionError, OSError):
            pass
        queue.put_nowait((0.0, b""))
        with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
            await sender
        dst.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def test_a_lone_streams_window_grows_on_a_delayed_path(tmp_path: Path, monkeypatch: Any) -> None:
    proxies: dict[tuple[str, int], DelayProxy] = {}
    real_open_link = circuit_manager.open_link

    async def delayed_open_link(host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        proxy = proxies.get((host, port))
        if proxy is None:
            proxy = proxies[(host, port)] = DelayProxy((host, port))
            addr = await proxy.start()
            proxy.addr = addr  # type: ignore[attr-defined]
        return await real_open_link(*proxy.addr, *args, **kwargs)  # type: ignore[attr-defined]

    monkeypatch.setattr(circuit_manager, "open_link", delayed_open_link)
    m, extras = await start_mesh(tmp_path)
    try:
        windows: list[int] = []

        async def watch() -> None:
            while True:
                for handle in list(m.client.circuits.circuits.values()):
                    for stream in list(handle.circ.streams.values()):
                        windows.append(getattr(stream.flow, "window", STREAM_WINDOW))
                await asyncio.sleep(0.02)

        watcher = asyncio.create_task(watch())
        try:
            body = await asyncio.to_thread(
                http_get_via_socks, m.socks_port, "localhost", m.origin.port, f"/blob/{SIZE}", 120.0
            )
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        assert body == m.origin.blob(SIZE)
        assert proxies  # the first hop was reached through the delay
        assert windows and STREAM_WINDOW < max(windows) <= STREAM_WINDOW_MAX
        rtt_hint = max(h.circ.rtt_hint for h in m.client.circuits.circuits.values())
        assert rtt_hint >= 2 * DELAY  # the client measured the delayed round trip
    finally:
        await stop_mesh(m, extras)
        for proxy in proxies.values():
            await proxy.close()

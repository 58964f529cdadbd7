"""Headless Chromium for tests: the project's flags, a fresh profile, one-shot runs (screenshot, DOM) and a
browser left running and driven over DevTools; plus the status page's server and the waits and traffic
the browser tests need on an in-process mesh (tests/helpers/mesh.py).

Chromium always runs with the project's flags (no sandbox, no GPU, no QUIC, no background networking)
and `--proxy-bypass-list=<-loopback>` so that loopback pages go through the proxy when one is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import shutil
import signal
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from onionmesh.runtime.client import status_page
from onionmesh.runtime.client.control import ControlServer
from tests.helpers.mesh import Mesh

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; .ci/run installs it)"
)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--proxy-bypass-list=<-loopback>",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"  # git-ignored


async def run_chromium(profile: Path, *args: str, timeout: float = 90.0) -> tuple[int, str, str]:
    """Run chromium without blocking the event loop (the mesh lives in this process)."""
    assert CHROMIUM is not None
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # chromium's helpers share its process group: end them together
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # stray helpers, if any outlived the browser
    return proc.returncode or 0, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


async def status_server(mesh: Mesh) -> tuple[ControlServer, bool]:
    """The client's control server if the status page is wired into it, else a second one with it."""
    control = mesh.client.control
    assert control is not None
    if any(path == status_page.PATH for _m, path, _h in control.extra_routes):
        return control, False
    server = ControlServer(mesh.client, "127.0.0.1", 0, control.cookie)
    server.extra_routes += status_page.routes(server)
    await server.start()
    return server, True


async def wait_for_circuits(mesh: Mesh, count: int, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if sum(1 for h in mesh.client.circuits.circuits.values() if h.built_at) >= count:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"fewer than {count} circuits were built")


@contextlib.contextmanager
def traffic_through(mesh: Mesh) -> Iterator[list[int]]:
    """Keep streams open and data flowing through the mesh (for the picture and the graph) while in use:
    one keep-alive HTTP connection per isolation label, each fetching a blob every 200 ms."""
    import socks

    stop = threading.Event()
    fetched: list[int] = []

    def worker(username: str | None) -> None:
        s = socks.socksocket()
        s.set_proxy(socks.SOCKS5, "127.0.0.1", mesh.socks_port, rdns=True, username=username, password="x")
        s.settimeout(30)
        try:
            s.connect(("127.0.0.1", mesh.origin.port))
            while not stop.is_set():
                s.sendall(f"GET /blob/{48 * 1024} HTTP/1.1\r\nHost: origin\r\n\r\n".encode())
                buf = b""
                while b"\r\n\r\n" not in buf:
                    buf += s.recv(65536)
                head, _, body = buf.partition(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
                while len(body) < length:
                    body += s.recv(65536)
                fetched.append(len(body))
                stop.wait(0.2)
        except OSError:
            pass
        finally:
            s.close()

    threads = [threading.Thread(target=worker, args=(u,), daemon=True) for u in (None, "tab-news")]
    for t in threads:
        t.start()
    try:
        yield fetched
    finally:
        stop.set()
        for t in threads:
            t.join(10)


async def wait_for_streams(mesh: Mesh, count: int, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if sum(len(h.circ.streams) for h in mesh.client.circuits.circuits.values()) >= count:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"fewer than {count} streams opened")


class Cdp:
    """A minimal Chrome DevTools Protocol client over the browser's WebSocket (aiohttp)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def call(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> Any:
        number = next(self.ids)
        message: dict[str, Any] = {"id": number, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        await self.ws.send_json(message)
        while True:
            reply = await asyncio.wait_for(self.ws.receive_json(), 30)
            if reply.get("id") == number:
                assert "error" not in reply, reply
                return reply.get("result", {})


@contextlib.asynccontextmanager
async def live_chromium(profile: Path, url: str) -> AsyncIterator[tuple[Cdp, str]]:
    """Chromium left running on `url` (real time, not virtual), driven over DevTools: (client, session)."""
    assert CHROMIUM is not None
    profile.mkdir(parents=True, exist_ok=True)
    with open(profile.parent / f"{profile.name}.log", "wb") as log:
        proc = await asyncio.create_subprocess_exec(
            CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
            "--window-size=1280,900", "--hide-scrollbars", url,
            stdout=asyncio.subprocess.DEVNULL, stderr=log, start_new_session=True,
        )  # fmt: skip
    try:
        port_file = profile / "DevToolsActivePort"
        for _ in range(300):
            if port_file.exists() and len(port_file.read_text().split()) >= 2:
                break
            await asyncio.sleep(0.1)
        port, path = port_file.read_text().split()[:2]
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"ws://127.0.0.1:{port}{path}", max_msg_size=0) as ws,
        ):
            cdp = Cdp(ws)
            targets = (await cdp.call("Target.getTargets"))["targetInfos"]
            page = next(t for t in targets if t["type"] == "page")
            session = (
                await cdp.call("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True})
            )["sessionId"]
            yield cdp, session
            with contextlib.suppress(Exception):
                await cdp.call("Browser.close")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()

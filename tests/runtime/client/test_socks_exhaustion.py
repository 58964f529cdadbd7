"""The SOCKS port cannot be exhausted by a local process: idle connections are capped and closed
(the peer sees EOF), a real curl still gets through, and running out of descriptors costs a few
log lines, not a storm (issue 15, item 9)."""

from __future__ import annotations

import asyncio
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from onionmesh.runtime.client import socks_server
from tests.helpers.mesh import Mesh, curl_via_socks

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is needed")


def _idle(port: int, n: int) -> list[socket.socket]:
    out = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        out.append(s)
    return out


def _sees_eof(s: socket.socket, timeout: float) -> bool:
    s.settimeout(timeout)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


async def test_a_handshake_that_times_out_is_closed(mesh: Mesh, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socks_server, "HANDSHAKE_TIMEOUT", 0.5)
    mesh.client.socks.handshake_timeout = 0.5
    (s,) = await asyncio.to_thread(_idle, mesh.socks_port, 1)
    half = socket.create_connection(("127.0.0.1", mesh.socks_port), timeout=10)
    half.sendall(b"\x05")  # half a greeting, then silence
    try:
        assert await asyncio.to_thread(_sees_eof, s, 15.0), "the idle connection was never closed"
        assert await asyncio.to_thread(_sees_eof, half, 15.0)
    finally:
        s.close()
        half.close()


async def test_more_idle_connections_than_the_cap_are_closed_and_curl_gets_through(mesh: Mesh) -> None:
    mesh.client.socks.max_handshakes = 20
    idle = await asyncio.to_thread(_idle, mesh.socks_port, 60)
    try:
        code, out, err = await curl_via_socks(mesh, 100_000)
        assert code == 0, err
        assert out == mesh.origin.blob(100_000)
        closed = 0
        for s in idle:
            closed += await asyncio.to_thread(_sees_eof, s, 0.2)
        assert closed >= 40, closed  # at most 20 idle handshakes stay open
        assert mesh.client.socks.evicted >= 40
    finally:
        for s in idle:
            s.close()


async def test_past_the_connection_cap_a_newcomer_is_closed_at_once(mesh: Mesh) -> None:
    mesh.client.socks.max_connections = 5
    held = await asyncio.to_thread(_idle, mesh.socks_port, 5)
    try:
        await asyncio.sleep(0.2)
        (extra,) = await asyncio.to_thread(_idle, mesh.socks_port, 1)
        assert await asyncio.to_thread(_sees_eof, extra, 10.0)
        extra.close()
        assert mesh.client.socks.refused == 1
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 10
    while mesh.client.socks.connections and time.monotonic() < deadline:  # all five are counted out
        await asyncio.sleep(0.05)
    code, _out, err = await curl_via_socks(mesh, 5000)
    assert code == 0, err


def _low_nofile() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))


@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
def test_out_of_descriptors_costs_a_few_log_lines_not_a_storm(tmp_path: Path, event_loop: str) -> None:
    env = {**os.environ, "ONIONMESH_EVENT_LOOP": event_loop}
    proc = subprocess.Popen(
        [sys.executable, "-m", "onionmesh", "proxy", "--bootstrap", "127.0.0.1:1",
         "--socks", "127.0.0.1:0", "--control", "127.0.0.1:0", "--data-dir", str(tmp_path / "c"),
         "--tor-control", "127.0.0.1:0",  # not Tor's 9051: another proxy on this machine may hold it
         "--log-level", "warning"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_low_nofile,
        env=env,
    )  # fmt: skip
    flood: list[socket.socket] = []
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline()
        match = re.search(r"SOCKS5 at [\d.]+:(\d+)", line)
        assert match, line or proc.stderr.read()  # no line: it exited; say why
        port = int(match.group(1))
        for _ in range(300):  # far past the proxy's 128 descriptors
            try:
                flood.append(socket.create_connection(("127.0.0.1", port), timeout=2))
            except OSError:
                break
        time.sleep(3.0)  # the flood stays while the proxy meets its limit
        for s in flood:
            s.close()
        flood.clear()
        # Still serving: a SOCKS5 greeting is answered.
        deadline = time.monotonic() + 20
        answered = b""
        while time.monotonic() < deadline and answered != b"\x05\x00":
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"\x05\x01\x00")
                try:
                    answered = s.recv(2)
                except OSError:
                    answered = b""
            time.sleep(0.2)
        assert answered == b"\x05\x00"
    finally:
        for s in flood:
            s.close()
        proc.send_signal(signal.SIGTERM)
        try:
            _out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _out, err = proc.communicate()
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) <= 5, f"{len(lines)} log lines, e.g. {lines[:3]}"

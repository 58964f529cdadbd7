"""The testnet as a user runs it (`python -m onionmesh testnet` in a subprocess: `run_testnet`) or
in process (onionmesh.app.testnet with relay processes), and the small pieces its tests share: a
free port, a quiet web server for the files they fetch, a SOCKS GET with an isolation username."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from onionmesh.app import testnet
from onionmesh.runtime import safelog
from tests.helpers.mesh import CRAWL_DIR_EPOCH

ONIONMESH = [sys.executable, "-m", "onionmesh"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients cut off mid-download (by design in the kill tests) are not errors here


def socks_get(socks_port: int, port: int, path: str, user: str, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    import socks

    s = socks.socksocket()
    s.set_proxy(socks.SOCKS5, "127.0.0.1", socks_port, rdns=True, username=user, password="x")
    s.settimeout(timeout)
    s.connect(("localhost", port))
    s.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
    return s


async def start_testnet(
    tmp_path: Path, *relay_args: str, relay_metrics_port: int | None = None
) -> testnet.Testnet:
    safelog.configure("warning")
    net = testnet.Testnet(
        tmp_path / "net",
        3,
        ("127.0.0.1", 0),
        ("127.0.0.1", 0),
        relay_args=relay_args,
        relay_metrics_port=relay_metrics_port,
        dir_epoch=CRAWL_DIR_EPOCH,  # the testnet's proxy crawls: its relays' directory sources idle
    )
    await net.start()
    return net


def run_testnet(
    state: Path, *extra: str, relays: int = 5, timeout: float = 120.0
) -> tuple[subprocess.Popen[str], dict[str, object], list[str]]:
    """`onionmesh testnet` as a user starts it: (the process, its testnet.json, what it printed up to
    its status-page line).  Its output is drained afterwards so that it never blocks on a full pipe;
    stop it with `stop_testnet`."""
    proc = subprocess.Popen(
        [*ONIONMESH, "testnet", "--relays", str(relays), "--socks", "127.0.0.1:0", "--state-dir", str(state),
         "--log-level", "warning", "--dir-epoch", str(CRAWL_DIR_EPOCH), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if "status page" in line or proc.poll() is not None:
            break
    if not any("onionmesh testnet ready" in line for line in lines):
        stop_testnet(proc)
        raise AssertionError("".join(lines))
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    info = json.loads((state / "testnet.json").read_text())
    info["state"] = state
    info["proc"] = proc
    return proc, info, lines


def stop_testnet(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)  # our own process, by its PID
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()

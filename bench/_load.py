"""Load generator for the benchmarks: many SOCKS5 streams at once, in a process of its own.

    python bench/_load.py fetch --socks PORT --port P --path /f --streams 200
        N concurrent HTTP/1.0 GETs through the proxy; prints one JSON line:
        {"wall_s": ..., "streams": [[bytes, seconds, seconds until connected], ...], "failed": n}
    python bench/_load.py hold --socks PORT --port P --streams 1000
        opens N streams (SOCKS CONNECT done, nothing sent), prints "open N", and holds them
        until stdin closes.

A process of its own so that its work does not land on the client's event loop (the proxy
runs inside the benchmark process, as `onionmesh testnet` runs it).

Imported by bench/throughput.py and bench/flood.py for what both need around their load: the
origin file server (`start_file_server`, `stop_all`) and a process's memory (`vm_kb`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

Pair = tuple[asyncio.StreamReader, asyncio.StreamWriter]
BENCH = Path(__file__).resolve().parent


def vm_kb(pid: int, field: str) -> int:
    """A field of /proc/PID/status in kB (VmRSS, VmHWM); 0 once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def start_file_server(www: Path) -> tuple[subprocess.Popen[str], int]:
    """bench/_origin.py serving `www` on loopback: (process, port)."""
    server = subprocess.Popen(
        [sys.executable, str(BENCH / "_origin.py"), str(www)], stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None
    return server, int(server.stdout.readline().split()[1])


async def stop_all(net: Any, server: subprocess.Popen[str]) -> None:
    """End a benchmark: the testnet's relays, then the file server (our own processes only)."""
    await net.stop()
    server.terminate()
    server.wait()


async def socks_connect(socks: int, host: str, port: int) -> Pair:
    reader, writer = await asyncio.open_connection("127.0.0.1", socks)
    writer.write(b"\x05\x01\x00")
    if await reader.readexactly(2) != b"\x05\x00":
        raise OSError("SOCKS greeting refused")
    name = host.encode()
    writer.write(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + port.to_bytes(2, "big"))
    reply = await reader.readexactly(4)
    if reply[1] != 0:
        raise OSError(f"SOCKS reply {reply[1]}")
    await reader.readexactly({1: 4, 4: 16}.get(reply[3], 0) + 2)
    return reader, writer


async def fetch_one(socks: int, host: str, port: int, path: str) -> tuple[int, float, float]:
    """(bytes, seconds from start to the end, seconds until the stream was connected)."""
    t0 = time.monotonic()
    reader, writer = await socks_connect(socks, host, port)
    connected = time.monotonic() - t0
    writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
    got = 0
    while chunk := await reader.read(1 << 18):
        got += len(chunk)
    writer.close()
    return got, time.monotonic() - t0, connected


async def fetch(args: argparse.Namespace) -> None:
    t0 = time.monotonic()
    results = await asyncio.gather(
        *(fetch_one(args.socks, args.host, args.port, args.path) for _ in range(args.streams)),
        return_exceptions=True,
    )
    ok = [r for r in results if isinstance(r, tuple)]
    out = {"wall_s": time.monotonic() - t0, "streams": ok, "failed": len(results) - len(ok)}
    print(json.dumps(out), flush=True)


async def hold(args: argparse.Namespace) -> None:
    opened = []
    for i in range(0, args.streams, 50):  # in batches, as a browser opens its connections
        batch = await asyncio.gather(
            *(socks_connect(args.socks, args.host, args.port) for _ in range(min(50, args.streams - i))),
            return_exceptions=True,
        )
        opened += [b for b in batch if isinstance(b, tuple)]
    print(f"open {len(opened)}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for _, writer in opened:
        writer.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["fetch", "hold"])
    ap.add_argument("--socks", type=int, required=True)
    ap.add_argument("--host", default="localhost")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/")
    ap.add_argument("--streams", type=int, default=200)
    args = ap.parse_args()
    asyncio.run(fetch(args) if args.mode == "fetch" else hold(args))


if __name__ == "__main__":
    main()


@contextlib.asynccontextmanager
async def onion_mesh(tmp: Path, relays: int, files: dict[str, bytes]) -> AsyncIterator[tuple[int, Any]]:
    """A testnet of `relays` relays, a file server for `files` and a factory of client nodes
    (`await make(name)`, each knowing every relay), all stopped on exit: what the onion-service
    benches share.  Yields (the file server's port, make)."""
    from onionmesh.app.testnet import Testnet
    from onionmesh.runtime.client.node import ClientConfig, ClientNode

    www = tmp / "www"
    www.mkdir()
    for name, data in files.items():
        (www / name).write_bytes(data)
    server, port = start_file_server(www)
    net = Testnet(tmp / "net", relays, ("127.0.0.1", 0), ("127.0.0.1", 0), log_level="error")
    nodes: list[ClientNode] = []
    try:
        info = await net.start()
        contacts = tuple((h, int(p)) for h, p in (b.rsplit(":", 1) for b in info["bootstrap"]))

        async def make(name: str) -> ClientNode:
            config = ClientConfig(data_dir=tmp / name, socks_port=0, control_port=0, bootstrap=contacts)
            n = ClientNode(config)
            await n.start()
            nodes.append(n)
            await n.directory.wait_for(relays, 30)
            return n

        yield port, make
    finally:
        for n in nodes:
            await n.stop()
        await stop_all(net, server)

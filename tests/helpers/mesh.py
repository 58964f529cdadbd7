"""A real mesh on loopback, in-process: relays on 127.0.N.1, a client with its SOCKS port, an origin server;
and the ways tests talk to it (pysocks, a hand-made SOCKS5 request, curl) and wait for it.

Every part talks over real TCP sockets; only the process is shared, so tests can look inside
relays (what each one saw) and swap in misbehaving ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from onionmesh.runtime.client.node import ClientConfig, ClientNode
from onionmesh.runtime.relay.node import RelayConfig, RelayNode

LOOPBACK_EXIT_POLICY = "accept 127.0.0.0/8:*; accept [::1]:*; reject *:*"


@dataclass
class Origin:
    """An HTTP server on 127.0.0.1 that serves fixed random blobs and records what is uploaded."""

    port: int
    blobs: dict[int, bytes] = field(default_factory=dict)
    uploads: list[bytes] = field(default_factory=list)
    peers: list[str] = field(default_factory=list)
    served: list[tuple[str, str]] = field(default_factory=list)  # (path, address it came from: the exit)

    def blob(self, size: int) -> bytes:
        if size not in self.blobs:
            self.blobs[size] = os.urandom(size)
        return self.blobs[size]


async def start_origin() -> tuple[Origin, web.AppRunner]:
    origin = Origin(0)

    async def blob(request: web.Request) -> web.Response:
        origin.peers.append(request.remote or "")
        origin.served.append((request.path, request.remote or ""))
        return web.Response(body=origin.blob(int(request.match_info["size"])))

    async def upload(request: web.Request) -> web.Response:
        origin.peers.append(request.remote or "")
        data = bytearray()
        try:
            async for chunk in request.content.iter_any():
                data += chunk
        finally:
            origin.uploads.append(bytes(data))
        return web.Response(text=hashlib.sha256(data).hexdigest())

    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.router.add_get("/blob/{size}", blob)
    app.router.add_post("/upload", upload)
    runner, origin.port = await serve(app)
    return origin, runner


async def serve(app: web.Application) -> tuple[web.AppRunner, int]:
    """Serve `app` on 127.0.0.1 at a free port: (the runner to clean up, the port)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


@dataclass
class Mesh:
    relays: list[RelayNode]
    client: ClientNode
    origin: Origin

    @property
    def socks_port(self) -> int:
        return self.client.socks.port

    def relay(self, fingerprint: str) -> RelayNode:
        return next(r for r in self.relays if r.fingerprint == fingerprint)


async def start_mesh(
    tmp_path: Path,
    *,
    relays: int = 5,
    exits: int = 3,
    exit_policy: str = LOOPBACK_EXIT_POLICY,
    exit_policy_udp: str = "",
    allow_private: bool = True,
    relay_factory: dict[int, type[RelayNode]] | None = None,
    prebuilt: int = 0,
    hops: int = 3,
    dht_refresh: float = 600.0,
    resolve_overrides: dict[str, list[str]] | None = None,
    hosts: list[str] | None = None,  # relay i listens on hosts[i]; default 127.{i+1}.0.1 (distinct /16s)
    dir_epoch: float = 3.0,  # the directory's epoch, accelerated (runtime.relay.dir_source)
    directory: str = "guards",  # "crawl": the whole-DHT crawl (runtime.client.directory)
) -> tuple[Mesh, list[object]]:
    origin, runner = await start_origin()
    nodes: list[RelayNode] = []
    for i in range(relays):
        cls = (relay_factory or {}).get(i, RelayNode)
        node = cls(
            RelayConfig(
                listen_host=hosts[i] if hosts else f"127.{i + 1}.0.1",
                listen_port=0,
                data_dir=tmp_path / f"relay{i}",
                nickname=f"relay{i}",
                exit_policy=exit_policy if i < exits else "",
                exit_policy_udp=exit_policy_udp if i < exits else "",
                allow_private_destinations=allow_private,
                bootstrap=(nodes[0].dht.address,) if nodes else (),  # the first relay starts the DHT
                resolve_overrides=dict(resolve_overrides or {}) if i < exits else {},
                dir_epoch=dir_epoch,
            )
        )
        await node.start()
        nodes.append(node)
    client = ClientNode(
        ClientConfig(
            data_dir=tmp_path / "client",
            socks_port=0,
            control_port=0,
            bootstrap=(nodes[0].dht.address,),
            prebuilt_circuits=prebuilt,
            hops=hops,
            dht_refresh=dht_refresh,
            directory=directory,
            dir_epoch=dir_epoch,
        )
    )
    await client.start()
    assert await client.directory.wait_for(relays, 30) == relays, "the client did not find every relay"
    return Mesh(nodes, client, origin), [runner]


async def stop_mesh(mesh: Mesh, extras: list[object]) -> None:
    await mesh.client.stop()
    for node in mesh.relays:
        await node.stop()
    for runner in extras:
        await runner.cleanup()  # type: ignore[attr-defined]
    await asyncio.sleep(0)


def socks5_connect(
    port: int,
    host: str,
    dport: int,
    *,
    timeout: float = 30.0,
    username: str | None = None,
    password: str = "x",
):
    """A blocking pysocks socket with remote DNS (run it in a thread); a username isolates its stream."""
    import socks

    s = socks.socksocket()
    if username is None:
        s.set_proxy(socks.SOCKS5, "127.0.0.1", port, rdns=True)
    else:
        s.set_proxy(socks.SOCKS5, "127.0.0.1", port, rdns=True, username=username, password=password)
    s.settimeout(timeout)
    s.connect((host, dport))
    return s


def http_get_on(sock: socket.socket, host: str, path: str) -> tuple[bytes, bytes]:
    """GET `path` over an open (SOCKS) socket, read to the end (HTTP/1.0), close it: (head, body)."""
    try:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        buf = bytearray()
        while chunk := sock.recv(1 << 16):
            buf += chunk
    finally:
        sock.close()
    head, _, body = bytes(buf).partition(b"\r\n\r\n")
    return head, body


def http_get_via_socks(port: int, host: str, dport: int, path: str, timeout: float = 60.0) -> bytes:
    head, body = http_get_on(socks5_connect(port, host, dport, timeout=timeout), host, path)
    assert head.startswith(b"HTTP/1.") and b" 200 " in head.split(b"\r\n")[0], head[:100]
    return body


def raw_socks5_reply(port: int, host: str, dport: int, timeout: float = 60.0) -> int:
    """Send a SOCKS5 CONNECT by hand and return the reply code (REP)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"\x05\x01\x00")
        assert s.recv(2) == b"\x05\x00"
        raw = host.encode()
        s.sendall(b"\x05\x01\x00\x03" + bytes([len(raw)]) + raw + dport.to_bytes(2, "big"))
        reply = s.recv(262)
        assert reply[:1] == b"\x05", reply
        return reply[1]


async def curl_via_socks(mesh: Mesh, size: int) -> tuple[int, bytes, bytes]:
    """curl fetches /blob/SIZE from the mesh's origin through its SOCKS port: (exit code, body, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--fail", "--max-time", "60",
        "--socks5-hostname", f"127.0.0.1:{mesh.socks_port}",
        f"http://localhost:{mesh.origin.port}/blob/{size}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out, err


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0, *, interval: float = 0.05) -> bool:
    """Poll until `predicate()` holds or `timeout` passes (a liveness bound, not a timing assert)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)
    return True

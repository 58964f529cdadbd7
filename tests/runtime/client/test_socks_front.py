"""The SOCKS front door over real sockets: every request form a real client sends, and isolation."""

from __future__ import annotations

import asyncio
import socket

import socks

from tests.helpers.mesh import Mesh, http_get_on


def _fetch(sock: socket.socket, host: str, path: str) -> bytes:
    return http_get_on(sock, host, path)[1]


async def test_socks4a_and_socks4_with_ipv4(mesh: Mesh) -> None:
    def run(rdns: bool, host: str) -> bytes:
        s = socks.socksocket()
        s.set_proxy(socks.SOCKS4, "127.0.0.1", mesh.socks_port, rdns=rdns)
        s.settimeout(30)
        s.connect((host, mesh.origin.port))
        return _fetch(s, host, "/blob/2000")

    assert await asyncio.to_thread(run, True, "localhost") == mesh.origin.blob(2000)  # SOCKS4a: a name
    assert await asyncio.to_thread(run, False, "127.0.0.1") == mesh.origin.blob(2000)  # SOCKS4: an IPv4


async def test_socks5_ipv4_literal(mesh: Mesh) -> None:
    def run() -> bytes:
        s = socks.socksocket()
        s.set_proxy(socks.SOCKS5, "127.0.0.1", mesh.socks_port, rdns=False)  # ATYP 0x01
        s.settimeout(30)
        s.connect(("127.0.0.1", mesh.origin.port))
        return _fetch(s, "127.0.0.1", "/blob/3000")

    assert await asyncio.to_thread(run) == mesh.origin.blob(3000)


async def test_socks5_ipv6_literal_reaches_an_ipv6_destination(mesh: Mesh) -> None:
    payload = b"hello over IPv6"

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(payload)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "::1", 0)
    port = server.sockets[0].getsockname()[1]

    def run() -> bytes:
        with socket.create_connection(("127.0.0.1", mesh.socks_port), timeout=30) as s:
            s.sendall(b"\x05\x01\x00")
            assert s.recv(2) == b"\x05\x00"
            s.sendall(
                b"\x05\x01\x00\x04" + socket.inet_pton(socket.AF_INET6, "::1") + port.to_bytes(2, "big")
            )
            reply = s.recv(4)
            assert reply[:2] == b"\x05\x00", reply
            s.recv(18 if reply[3] == 4 else 6)
            data = b""
            while chunk := s.recv(1024):
                data += chunk
            return data

    try:
        assert await asyncio.to_thread(run) == payload
    finally:
        server.close()


async def test_username_password_isolates_streams(mesh: Mesh) -> None:
    def run(user: str) -> bytes:
        s = socks.socksocket()
        s.set_proxy(socks.SOCKS5, "127.0.0.1", mesh.socks_port, rdns=True, username=user, password="x")
        s.settimeout(30)
        s.connect(("localhost", mesh.origin.port))
        return _fetch(s, "localhost", "/blob/1000")

    for user in ("alice", "bob", "alice"):
        assert await asyncio.to_thread(run, user) == mesh.origin.blob(1000)
    isolations = [h.isolation for h in mesh.client.circuits.circuits.values()]
    assert sorted(isolations) == sorted([(b"alice", b"x"), (b"bob", b"x")])  # alice's circuit was reused

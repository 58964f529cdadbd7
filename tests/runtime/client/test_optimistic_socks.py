"""Optimistic data and the early SOCKS success over real sockets: a mesh of real relays on
loopback, pysocks and raw SOCKS5 clients, a real HTTP origin (docs/protocol.md §7.6, §14.6)."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from onionmesh.runtime.relay.exit_limits import StreamCaps
from tests.helpers.mesh import Mesh, http_get_on, socks5_connect, start_mesh, stop_mesh

WAIT = 60.0  # bounded waits for liveness only


@pytest.fixture
async def mesh1(tmp_path: Path) -> AsyncIterator[Mesh]:
    """A mesh with a single exit: every circuit ends at it, so its counters see every stream."""
    mesh, extras = await start_mesh(tmp_path, relays=4, exits=1)
    try:
        yield mesh
    finally:
        await stop_mesh(mesh, extras)


def exit_stat(mesh: Mesh, name: str) -> int:
    return mesh.relays[0].stats.get(name, 0)


def socks_connect_reply(
    port: int, host: str, dport: int, payload: bytes = b"", user: bytes = b""
) -> tuple[int, bytes]:
    """A raw SOCKS5 CONNECT (username/password auth when `user`), `payload` in the same write as
    the request (a client that pipelines, as Tor Browser does); (REP, all bytes after the reply)."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
        if user:
            s.sendall(b"\x05\x01\x02")
            assert s.recv(2) == b"\x05\x02"
            s.sendall(b"\x01" + bytes([len(user)]) + user + b"\x01x")
            assert s.recv(2) == b"\x01\x00"
        else:
            s.sendall(b"\x05\x01\x00")
            assert s.recv(2) == b"\x05\x00"
        raw = host.encode()
        s.sendall(b"\x05\x01\x00\x03" + bytes([len(raw)]) + raw + dport.to_bytes(2, "big") + payload)
        reply = bytearray()
        while len(reply) < 10:  # an IPv4 bound address: 10 bytes
            chunk = s.recv(10 - len(reply))
            assert chunk, bytes(reply)
            reply += chunk
        rest = bytearray()
        if reply[1] == 0:
            while chunk := s.recv(1 << 16):
                rest += chunk
        return reply[1], bytes(rest)


async def listener() -> tuple[asyncio.Server, int, list[bytes]]:
    """A TCP server on loopback that records what each connection sends, then answers "ok"."""
    got: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.append(await reader.readexactly(5))
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], got


async def test_a_pipelined_request_rides_behind_begin(mesh1: Mesh) -> None:
    """Bytes sent with the SOCKS request go as DATA right behind BEGIN; the exit holds them and
    writes them first once connected.  Before relay protocol 3 they waited for CONNECTED."""
    server, port, got = await listener()
    try:
        code, rest = await asyncio.to_thread(
            socks_connect_reply, mesh1.socks_port, "127.0.0.1", port, b"hello"
        )
    finally:
        server.close()
    assert (code, rest, got) == (0, b"ok", [b"hello"])
    assert exit_stat(mesh1, "streams_optimistic") == 1


async def test_a_refused_connect_after_a_pipelined_request_is_still_a_socks_error(mesh1: Mesh) -> None:
    server, port, _ = await listener()
    server.close()
    await server.wait_closed()
    code, _ = await asyncio.to_thread(socks_connect_reply, mesh1.socks_port, "127.0.0.1", port, b"hello")
    assert code == 5  # connection refused, as without optimistic data: no early success for a new target
    assert exit_stat(mesh1, "streams_optimistic") == 0


@pytest.mark.parametrize("early_reply", [True, False])
async def test_early_success_only_for_a_target_this_circuit_reached(mesh1: Mesh, early_reply: bool) -> None:
    """The second CONNECT to a host:port on the same circuit is answered before CONNECTED, so a
    destination that went away meanwhile shows as success then a closed connection (no bytes);
    that failure is remembered (the next request gets the exit's answer, 0x05), and another
    circuit (another isolation class) never gets an early success for it."""
    mesh1.client.socks.requests.early_reply = early_reply
    server, port, got = await listener()
    code, rest = await asyncio.to_thread(socks_connect_reply, mesh1.socks_port, "127.0.0.1", port, b"first")
    assert (code, rest, got) == (0, b"ok", [b"first"])
    server.close()
    await server.wait_closed()
    code, rest = await asyncio.to_thread(socks_connect_reply, mesh1.socks_port, "127.0.0.1", port, b"again")
    assert (code, rest) == ((0, b"") if early_reply else (5, b""))
    assert mesh1.client.socks.requests.answered_early == (1 if early_reply else 0)
    code, _ = await asyncio.to_thread(socks_connect_reply, mesh1.socks_port, "127.0.0.1", port, b"third")
    assert code == 5
    code, _ = await asyncio.to_thread(
        socks_connect_reply, mesh1.socks_port, "127.0.0.1", port, b"other", b"another-user"
    )
    assert code == 5


async def test_early_success_carries_a_fetch_and_an_upload_byte_exact(mesh1: Mesh) -> None:
    """After an early success the application's bytes (far more than optimistic data carries,
    the first of them pipelined with the request) all arrive, in order, and the answer comes
    back whole: the stream opens fully on CONNECTED."""
    origin = mesh1.origin
    want = origin.blob(200_000)

    def fetch() -> bytes:
        sock = socks5_connect(mesh1.socks_port, "localhost", origin.port)
        head, body = http_get_on(sock, "localhost", "/blob/200000")
        assert b" 200 " in head.split(b"\r\n")[0], head[:100]
        return body

    assert await asyncio.to_thread(fetch) == want  # the circuit learns the target
    assert await asyncio.to_thread(fetch) == want  # answered early
    assert mesh1.client.socks.requests.answered_early == 1
    data = bytes(range(256)) * 1000  # 256 kB: far more than OPTIMISTIC_CELLS cells
    post = b"POST /upload HTTP/1.0\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(data) + data

    def upload() -> tuple[int, bytes]:
        with socket.create_connection(("127.0.0.1", mesh1.socks_port), timeout=WAIT) as s:
            s.sendall(b"\x05\x01\x00")
            assert s.recv(2) == b"\x05\x00"
            request = b"\x05\x01\x00\x03\x09localhost" + origin.port.to_bytes(2, "big")
            s.sendall(request + post[:3000])
            reply = s.recv(10)
            s.sendall(post[3000:])
            buf = bytearray()
            while chunk := s.recv(65536):
                buf += chunk
            return reply[1], bytes(buf)

    before = exit_stat(mesh1, "streams_optimistic")
    code, answer = await asyncio.to_thread(upload)
    assert code == 0
    assert hashlib.sha256(data).hexdigest().encode() in answer
    assert origin.uploads[-1] == data
    assert exit_stat(mesh1, "streams_optimistic") - before == 1
    assert mesh1.client.socks.requests.answered_early == 2


async def test_after_an_early_success_an_exit_side_failure_is_retried_through_another_exit(
    tmp_path: Path,
) -> None:
    """An early success loses the SOCKS error code, not the retry: an exit that refuses for a
    reason of its own (END RESOURCELIMIT: out of sockets) makes the proxy take another exit, and
    the bytes already sent optimistically go again there (after its CONNECTED); the application
    only waits longer."""
    mesh, extras = await start_mesh(tmp_path, relays=5, exits=2)
    try:
        server, port, got = await listener()
        code, rest = await asyncio.to_thread(
            socks_connect_reply, mesh.socks_port, "127.0.0.1", port, b"first"
        )
        assert (code, rest) == (0, b"ok")
        now = time.monotonic()
        (learned,) = [
            h for h in mesh.client.circuits.circuits.values() if h.recent.fresh("127.0.0.1", port, now)
        ]
        first_exit = learned.exit.fingerprint
        mesh.relay(first_exit).exit_service.streams.caps = StreamCaps(0, 0, 0)  # it admits no stream now
        code, rest = await asyncio.to_thread(
            socks_connect_reply, mesh.socks_port, "127.0.0.1", port, b"again"
        )
        assert (code, rest) == (0, b"ok")
        assert mesh.client.socks.requests.answered_early == 1
        assert got == [b"first", b"again"]
        assert mesh.relay(first_exit).stats.get("streams_refused_circuit", 0) == 1
        # the retry's bytes waited for the second exit's CONNECTED: behind its BEGIN they would
        # have told it that this request had an early success elsewhere
        (second,) = [r for r in mesh.relays[:2] if r.fingerprint != first_exit]
        assert second.stats.get("streams_opened", 0) == 1
        assert second.stats.get("streams_optimistic", 0) == 0
        server.close()
    finally:
        await stop_mesh(mesh, extras)

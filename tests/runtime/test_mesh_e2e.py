"""End to end over real sockets: curl and pysocks through three relays to a real HTTP server."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import socket

import pytest

from tests.helpers.mesh import (
    Mesh,
    curl_via_socks,
    http_get_via_socks,
    raw_socks5_reply,
    start_mesh,
    stop_mesh,
)

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is needed")


async def test_curl_fetches_blob_byte_identical(mesh: Mesh) -> None:
    size = 5 * 1024 * 1024
    want = mesh.origin.blob(size)
    code, out, err = await curl_via_socks(mesh, size)
    assert code == 0, err
    assert hashlib.sha256(out).digest() == hashlib.sha256(want).digest()


async def test_pysocks_remote_dns_and_upload(mesh: Mesh) -> None:
    want = mesh.origin.blob(300_000)
    body = await asyncio.to_thread(
        http_get_via_socks, mesh.socks_port, "localhost", mesh.origin.port, "/blob/300000"
    )
    assert body == want
    # An upload: bytes from the client arrive intact at the destination.
    data = bytes(range(256)) * 4000

    def upload() -> bytes:
        from tests.helpers.mesh import socks5_connect

        s = socks5_connect(mesh.socks_port, "localhost", mesh.origin.port)
        s.sendall(b"POST /upload HTTP/1.0\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
        buf = bytearray()
        while chunk := s.recv(65536):
            buf += chunk
        s.close()
        return bytes(buf)

    reply = await asyncio.to_thread(upload)
    assert hashlib.sha256(data).hexdigest().encode() in reply
    assert mesh.origin.uploads[-1] == data


async def test_concurrent_fetches_all_correct(mesh: Mesh) -> None:
    size = 256 * 1024
    want = mesh.origin.blob(size)
    results = await asyncio.gather(
        *(
            asyncio.to_thread(
                http_get_via_socks, mesh.socks_port, "localhost", mesh.origin.port, f"/blob/{size}"
            )
            for _ in range(30)
        )
    )
    assert all(r == want for r in results)


async def test_resolve_through_the_exit(mesh: Mesh) -> None:
    def tor_resolve(host: str) -> tuple[int, bytes]:
        with socket.create_connection(("127.0.0.1", mesh.socks_port), timeout=30) as s:
            s.sendall(b"\x05\x01\x00")
            assert s.recv(2) == b"\x05\x00"
            s.sendall(b"\x05\xf0\x00\x03" + bytes([len(host)]) + host.encode() + b"\x00\x00")
            reply = s.recv(64)
            return reply[1], reply[3:]

    code, rest = await asyncio.to_thread(tor_resolve, "localhost")
    assert code == 0
    assert rest[:1] in (b"\x01", b"\x04")  # an IPv4 or IPv6 answer
    # Names other than localhost are never sent to the system resolver by a loopback-only exit.
    code, _ = await asyncio.to_thread(tor_resolve, "example.com")
    assert code == 4


async def test_reply_codes_mean_what_they_say(mesh: Mesh) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    assert await asyncio.to_thread(raw_socks5_reply, mesh.socks_port, "127.0.0.1", port) == 0x05
    # The testnet exits accept loopback only: anything else is refused by policy, without DNS.
    assert await asyncio.to_thread(raw_socks5_reply, mesh.socks_port, "192.0.2.1", 80) == 0x02


async def test_exit_refuses_private_destinations_by_default(tmp_path) -> None:
    m, extras = await start_mesh(tmp_path, exit_policy="accept *:*", allow_private=False)
    try:
        for host in ("127.0.0.1", "localhost", "::1"):
            code = await asyncio.to_thread(raw_socks5_reply, m.socks_port, host, m.origin.port)
            assert code == 0x02, host
        assert m.origin.peers == []  # nothing reached the destination
    finally:
        await stop_mesh(m, extras)


async def test_circuits_of_configurable_length(tmp_path) -> None:
    m, extras = await start_mesh(tmp_path, relays=8, exits=3)
    try:
        for hops in (1, 2, 5, 8):
            handle = await m.client.circuits.build(hops=hops, port=m.origin.port)
            assert len(handle.circ.hops) == hops
            assert len({d.fingerprint for d in handle.path}) == hops
    finally:
        await stop_mesh(m, extras)


async def test_logs_carry_no_destination_even_at_debug(mesh: Mesh) -> None:
    import io

    import structlog

    from onionmesh.runtime import safelog

    stream = io.StringIO()
    safelog.configure("debug", safe=True, stream=stream)
    try:
        secret = "onionmesh-secret-destination.localhost"  # RFC 6761: the exit answers it without DNS
        body = await asyncio.to_thread(
            http_get_via_socks, mesh.socks_port, secret, mesh.origin.port, "/blob/100"
        )
        assert body == mesh.origin.blob(100)
        safelog.configure("debug", safe=False, stream=stream)
        await asyncio.to_thread(
            http_get_via_socks, mesh.socks_port, "unsafe-marker.localhost", mesh.origin.port, "/blob/1"
        )
    finally:
        structlog.reset_defaults()
    text = stream.getvalue()
    assert "[scrubbed]" in text  # the destination was there to log, and was scrubbed
    assert "onionmesh-secret-destination" not in text
    assert "unsafe-marker" in text  # --unsafe-logging really shows it (so the check above can fail)


async def test_a_name_only_the_exit_resolves_is_fetched_through_the_mesh(mesh: Mesh) -> None:
    name = "only-the-exit.onionmesh-test.internal"
    # No resolver outside the exit knows this name (and the test asks none: no query may leave loopback).
    for relay in mesh.relays:
        if relay.exit_rules is not None:
            relay.exit_rules.overrides[name] = ["127.0.0.1"]
    body = await asyncio.to_thread(http_get_via_socks, mesh.socks_port, name, mesh.origin.port, "/blob/777")
    assert body == mesh.origin.blob(777)

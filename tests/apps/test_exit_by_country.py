"""Exit by country on a real testnet: relays mapped to countries by a --geoip-file the test
writes (127.1.0.0/16 DE, 127.2.0.0/16 FR, 127.3.0.0/16 US, 127.4.0.0/16 SE), real sockets,
real relay processes, countries checked through the control API."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from onionmesh.app import testnet
from onionmesh.app.cli import build_parser, node_choice, settings
from onionmesh.runtime import safelog
from tests.helpers.mesh import CRAWL_DIR_EPOCH

COUNTRIES = {1: "DE", 2: "FR", 3: "US", 4: "SE"}  # 127.N.0.0/16 -> country; testnet relay i is 127.(i+1).0.1
BODY = b"hello from the origin"


def geoip_file(path: Path) -> Path:
    lines = []
    for n, cc in COUNTRIES.items():
        net = ipaddress.ip_network(f"127.{n}.0.0/16")
        lines.append(f"{int(net.network_address)},{int(net.broadcast_address)},{cc}")
    path.write_text("# test mapping\n" + "\n".join(lines) + "\n")
    return path


async def start_origin() -> asyncio.Server:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY))
        await writer.drain()
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


def socks_fetch(socks_port: int, origin_port: int, username: bytes | None) -> tuple[int, bytes]:
    """SOCKS5 (username/password auth when a username is given) CONNECT to the origin; returns
    the reply code and, on success, the HTTP body."""
    with socket.create_connection(("127.0.0.1", socks_port), timeout=60) as s:
        if username is None:
            s.sendall(b"\x05\x01\x00")
            assert s.recv(2) == b"\x05\x00"
        else:
            s.sendall(b"\x05\x01\x02")
            assert s.recv(2) == b"\x05\x02"
            s.sendall(b"\x01" + bytes([len(username)]) + username + b"\x01p")
            assert s.recv(2) == b"\x01\x00"
        s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack(">H", origin_port))
        head = s.recv(10)
        code = head[1]
        if code != 0:
            return code, b""
        s.sendall(b"GET / HTTP/1.0\r\nHost: origin\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return code, data.partition(b"\r\n\r\n")[2]


async def control(net: testnet.Testnet, method: str, path: str, body: object = None) -> Any:
    assert net.client is not None and net.client.control is not None
    cookie = (net.state_dir / "client" / "control_auth_cookie").read_bytes()
    url = f"http://127.0.0.1:{net.client.control.port}{path}"
    async with (
        aiohttp.ClientSession(headers={"Authorization": "Cookie " + cookie.hex()}) as session,
        session.request(method, url, json=body) as resp,
    ):
        return resp.status, await resp.json()


async def start(tmp_path: Path, *flags: str) -> testnet.Testnet:
    safelog.configure("warning")
    args = settings(
        "testnet",
        build_parser().parse_args(["testnet", "--geoip-file", str(geoip_file(tmp_path / "geoip")), *flags]),
    )
    net = testnet.Testnet(tmp_path / "net", 4, ("127.0.0.1", 0), ("127.0.0.1", 0), dir_epoch=CRAWL_DIR_EPOCH)
    net.geoip, net.restrictions = node_choice(args)
    await net.start()
    return net


def hop_countries(circuit: dict[str, Any]) -> list[str]:
    return [h["country"] for h in circuit["hops"]]


@pytest.mark.slow
async def test_exit_nodes_username_and_refusal_on_a_testnet(tmp_path: Path) -> None:
    origin = await start_origin()
    origin_port = origin.sockets[0].getsockname()[1]
    net = await start(tmp_path, "--exit-nodes", "{de}")
    try:
        assert net.client is not None
        port = net.client.socks.port
        for i in range(6):  # different isolation keys: several circuits
            code, body = await asyncio.to_thread(socks_fetch, port, origin_port, b"tab-%d" % i)
            assert (code, body) == (0, BODY)
        code, body = await asyncio.to_thread(socks_fetch, port, origin_port, b"exit={fr}")
        assert (code, body) == (0, BODY)
        code, body = await asyncio.to_thread(socks_fetch, port, origin_port, b"exit={xx}")
        assert (code, body) == (0x02, b"")  # no exit in xx: refused, not rerouted
        code, _ = await asyncio.to_thread(socks_fetch, port, origin_port, b"exit={germany}")
        assert code == 0x02  # a malformed restriction is refused, not ignored
        status, built = await control(net, "POST", "/circuits", {"exit_country": "us"})
        assert status == 200 and hop_countries(built)[-1] == "US"

        status, circuits = await control(net, "GET", "/circuits")
        assert status == 200
        by_iso: dict[str | None, list[list[str]]] = {}
        for c in circuits:
            if c["state"] == "open":
                by_iso.setdefault(c["isolation"], []).append(hop_countries(c))
        assert all(paths and all(p[-1] == "FR" for p in paths) for paths in [by_iso["exit={fr}"]])
        assert all(p[-1] == "US" for p in by_iso["exit={us}"])
        others = [p for iso, paths in by_iso.items() if iso not in ("exit={fr}", "exit={us}") for p in paths]
        assert len(others) >= 6 and all(p[-1] == "DE" for p in others)  # the global ExitNodes {de}
        assert all("??" not in p for paths in by_iso.values() for p in paths)
        assert "exit={xx}" not in by_iso
    finally:
        await net.stop()
        origin.close()


@pytest.mark.slow
async def test_excluded_country_on_no_hop_of_any_circuit(tmp_path: Path) -> None:
    origin = await start_origin()
    origin_port = origin.sockets[0].getsockname()[1]
    net = await start(tmp_path, "--exclude-nodes", "{se}")
    try:
        assert net.client is not None
        for i in range(4):
            code, _ = await asyncio.to_thread(socks_fetch, net.client.socks.port, origin_port, b"t%d" % i)
            assert code == 0
        for _ in range(12):
            status, _built = await control(net, "POST", "/circuits", {})
            assert status == 200
        status, circuits = await control(net, "GET", "/circuits")
        paths = [hop_countries(c) for c in circuits]
        assert len(paths) >= 16
        assert all("SE" not in p for p in paths)
        # the SE relay exists and is known: only the restriction keeps it out
        status, relays = await control(net, "GET", "/relays")
        assert "SE" in {r["country"] for r in relays}
    finally:
        await net.stop()
        origin.close()

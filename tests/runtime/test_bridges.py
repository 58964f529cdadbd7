"""Bridges on loopback: the decoy web site, a bridged client through the WebSocket transport, no UDP.

The relays of `start_mesh` form the public network; one more relay runs as a bridge with
`--ws-listen`; the client knows only the bridge line and one DHT contact, which it reaches
through circuits over the bridge.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import aiohttp
import pytest

from onionmesh.directory.bridge_line import parse_bridge_line
from onionmesh.rng import SeededRng
from onionmesh.runtime.client.bridges import BridgeSet
from onionmesh.runtime.client.circuit_manager import CircuitMgr
from onionmesh.runtime.client.node import ClientConfig, ClientNode
from onionmesh.runtime.dht import protocol as dht_protocol
from onionmesh.runtime.relay.node import RelayConfig, RelayNode
from onionmesh.runtime.transport.ws_front import DECOY_PAGE, SECRET_FILE
from onionmesh.wire.cell import Cell, CellCommand
from tests.helpers.mesh import LOOPBACK_EXIT_POLICY, http_get_via_socks, start_mesh, stop_mesh

HANDSHAKE_MARKERS = (b"onionmesh", b"om-link")


async def start_bridge(tmp_path: Path, bootstrap: tuple[str, int], **extra: object) -> RelayNode:
    bridge = RelayNode(
        RelayConfig(
            listen_host="127.60.0.1",
            listen_port=0,
            data_dir=tmp_path / "bridge",
            nickname="bridge",
            bootstrap=(bootstrap,),
            bridge=True,
            ws_listen=("127.60.0.1", 0),
            **extra,  # type: ignore[arg-type]
        )
    )
    await bridge.start()
    return bridge


async def fetch(url: str, **kwargs: object) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as session, session.get(url, **kwargs) as resp:  # type: ignore[arg-type]
        return resp.status, dict(resp.headers), await resp.read()


async def test_probing_the_bridge_sees_a_web_site(tmp_path: Path) -> None:
    mesh, extras = await start_mesh(tmp_path, relays=3, exits=1)
    bridge = await start_bridge(tmp_path, mesh.relays[0].dht.address)
    try:
        assert bridge.front is not None and bridge.bridge_line is not None
        base = f"http://127.60.0.1:{bridge.front.port}"
        secret = (tmp_path / "bridge" / SECRET_FILE).read_text().strip()
        assert len(secret) >= 43 and oct((tmp_path / "bridge" / SECRET_FILE).stat().st_mode)[-3:] == "600"
        assert oct((tmp_path / "bridge" / "bridge-line").stat().st_mode)[-3:] == "600"
        status, headers, body = await fetch(base + "/")
        assert status == 200 and body.decode() == DECOY_PAGE
        assert headers["Server"] == "nginx" and "aiohttp" not in str(headers)
        statuses = {}
        wrong_secret = secret[:-1] + ("A" if secret[-1] != "A" else "B")
        for path in ("/robots.txt", "/" + os.urandom(16).hex(), "/" + secret, "/" + wrong_secret):
            status, headers, body = await fetch(base + path)
            statuses[path] = status
            assert not any(m in body.lower() for m in HANDSHAKE_MARKERS)
        assert set(statuses.values()) == {404}, "the secret path without an upgrade is just another 404"
        # A WebSocket upgrade on any other path is refused like any other request.
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await session.ws_connect(base + "/" + wrong_secret)
        # The bridge is not in the DHT: a fresh crawl finds the public relays only.
        assert bridge.fingerprint not in {d.fingerprint for d in mesh.client.relays}
        assert bridge.dht.protocol is not None and bridge.dht.descriptor_raw is None
    finally:
        await bridge.stop()
        await stop_mesh(mesh, extras)


async def test_malformed_websocket_input_gets_a_clean_close(tmp_path: Path) -> None:
    mesh, extras = await start_mesh(tmp_path, relays=1, exits=0)
    bridge = await start_bridge(tmp_path, mesh.relays[0].dht.address)
    try:
        url = bridge.bridge_line.url  # type: ignore[union-attr]
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(url)
            await ws.send_str("hello")
            msg = await asyncio.wait_for(ws.receive(), 5)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            ws = await session.ws_connect(url, max_msg_size=0)
            await ws.send_bytes(os.urandom(512 * 1024))  # over the bridge's message limit
            msg = await asyncio.wait_for(ws.receive(), 5)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            ws = await session.ws_connect(url)
            await ws.send_bytes(b"\xff" * 4096)  # not a link handshake
            msg = await asyncio.wait_for(ws.receive(), 20)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        await asyncio.sleep(0.2)
        assert not bridge.links, "every bad WebSocket link is gone"
    finally:
        await bridge.stop()
        await stop_mesh(mesh, extras)


async def test_bridged_client_fetches_without_any_udp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mesh, extras = await start_mesh(tmp_path, relays=4, exits=2, exit_policy=LOOPBACK_EXIT_POLICY)
    bridge = await start_bridge(tmp_path, mesh.relays[0].dht.address)
    datagram_endpoints: list[object] = []
    loop = asyncio.get_running_loop()
    real = loop.create_datagram_endpoint

    async def counting(*args: object, **kwargs: object) -> object:
        datagram_endpoints.append(args)
        return await real(*args, **kwargs)  # type: ignore[arg-type]

    calls: list[tuple[str, int]] = []
    real_call = dht_protocol.OnionmeshDhtProtocol.call

    async def spy(self, address, name, args):  # type: ignore[no-untyped-def]
        calls.append(address)
        return await real_call(self, address, name, args)

    line = parse_bridge_line((tmp_path / "bridge" / "bridge-line").read_text())
    client = ClientNode(
        ClientConfig(
            data_dir=tmp_path / "bridged-client",
            socks_port=0,
            control_port=0,
            prebuilt_circuits=0,
            bridges=(line,),
        )
    )
    monkeypatch.setattr(loop, "create_datagram_endpoint", counting)
    monkeypatch.setattr(dht_protocol.OnionmeshDhtProtocol, "call", spy)
    try:
        await client.start()
        found = await client.directory.wait_for(4, 40)
        assert found == 4, "the client crawled the DHT through the bridge (seeds from the bridge)"
        body = await asyncio.to_thread(
            http_get_via_socks, client.socks.port, "127.0.0.1", mesh.origin.port, "/blob/5000"
        )
        assert body == mesh.origin.blob(5000)
        handles = list(client.circuits.circuits.values())
        assert handles and all(h.path[0].fingerprint == bridge.fingerprint for h in handles)
        assert datagram_endpoints == [], "the bridged client opened a UDP socket"
        assert client.directory.dht.transport is None
        assert bridge.dht_rpc.stats["dht_rpc_ok"] > 0 or any(
            r.dht_rpc.stats["dht_rpc_ok"] for r in mesh.relays
        )
    finally:
        await client.stop()
        await bridge.stop()
        await stop_mesh(mesh, extras)


async def test_dht_over_circuits_without_bridges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--dht-over-circuits`: a client that starts from its cached relays crawls through circuits."""
    mesh, extras = await start_mesh(tmp_path, relays=4, exits=2)
    data = tmp_path / "doc-client"
    data.mkdir(mode=0o700)
    shutil.copy2(tmp_path / "client" / "cached-descriptors.json", data / "cached-descriptors.json")
    endpoints: list[object] = []
    loop = asyncio.get_running_loop()
    real = loop.create_datagram_endpoint

    async def counting(*args: object, **kwargs: object) -> object:
        endpoints.append(args)
        return await real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "create_datagram_endpoint", counting)
    config = ClientConfig(
        data_dir=data, socks_port=0, control_port=0, prebuilt_circuits=0, dht_over_circuits=True
    )
    client = ClientNode(config)
    try:
        await client.start()
        before = sum(r.dht_rpc.stats["dht_rpc_ok"] for r in mesh.relays)
        assert await client.directory.refresh() == 4
        assert sum(r.dht_rpc.stats["dht_rpc_ok"] for r in mesh.relays) > before
        body = await asyncio.to_thread(
            http_get_via_socks, client.socks.port, "127.0.0.1", mesh.origin.port, "/blob/3000"
        )
        assert body == mesh.origin.blob(3000)
        assert endpoints == [] and client.directory.dht.transport is None
        dht_circuits = [h for h in client.circuits.circuits.values() if repr(h.isolation) == "DHT"]
        assert dht_circuits and all(len(h.path) == 3 for h in dht_circuits)
    finally:
        await client.stop()
        await stop_mesh(mesh, extras)


async def test_cells_queued_on_a_bridge_link_count_against_the_clients_queue_budget(tmp_path: Path) -> None:
    """A bridge link shares the client's queue budget like any first hop's link, so the memory
    guard sees (and can shed) what waits on it; it used to get a budget of its own, unbounded."""
    bridge = RelayNode(  # a lone bridge: the bridge line is all the client needs, no DHT
        RelayConfig(
            listen_host="127.60.0.1",
            listen_port=0,
            data_dir=tmp_path / "bridge",
            nickname="bridge",
            bridge=True,
            ws_listen=("127.60.0.1", 0),
        )
    )
    await bridge.start()
    mgr = CircuitMgr(lambda: [], SeededRng(7))
    try:
        line = bridge.bridge_line
        assert line is not None
        mgr.first_hops = BridgeSet([line], SeededRng(8))
        link = await mgr.link_to_bridge(line.identity_pk)
        assert mgr.first_hops.descriptors[line.identity_pk].fingerprint == bridge.fingerprint
        budget = mgr.limits.budget
        assert budget is not None and budget.used == 0
        cells = [Cell(link.allocate_circ_id(), CellCommand.RELAY, bytes(100)) for _ in range(3)]
        for cell in cells:
            assert link.send_cell(cell)
        # queued, not yet written (the link flushes on the next loop turn): all three count
        assert budget.used == sum(len(c.encode()) for c in cells)
        for _ in range(500):  # a bounded wait for the flush
            if budget.used == 0:
                break
            await asyncio.sleep(0.01)
        assert budget.used == 0, "and the budget is given back once they are written"
    finally:
        mgr.links.close_all()
        await bridge.stop()

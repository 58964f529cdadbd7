"""Ephemeral onion services through the JSON control API (runtime/client/onion_api.py), against
docs/openapi.json, on a real-socket mesh: POST starts one for the mesh's web server, another
client node fetches a page from it by its .onion name byte-exact, DELETE stops it; bad bodies,
a key given twice and unknown ids get their documented errors."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import aiohttp

from onionmesh.app.control_cli import format_circuit
from onionmesh.crypto.hs_address import encode_address
from onionmesh.crypto.hs_blinding import ExpandedKey
from onionmesh.runtime.client.node import ClientConfig, ClientNode
from tests.helpers.mesh import http_get_via_socks, start_mesh, stop_mesh
from tests.runtime.client.test_control_api import check

RELAYS = 8
WAIT = 90.0  # liveness bound only


async def test_post_get_delete_an_ephemeral_service(tmp_path: Path) -> None:
    mesh, extras = await start_mesh(tmp_path, relays=RELAYS, exits=1)
    visitor = ClientNode(
        ClientConfig(data_dir=tmp_path / "visitor", socks_port=0, control_port=0,
                     bootstrap=(mesh.relays[0].dht.address,), prebuilt_circuits=0)
    )  # fmt: skip
    await visitor.start()
    control = mesh.client.control
    assert control is not None
    base = f"http://127.0.0.1:{control.port}/onion-services"
    headers = {"Authorization": "Cookie " + control.cookie.hex()}
    try:
        assert await visitor.directory.wait_for(RELAYS, 30) >= RELAYS
        async with aiohttp.ClientSession(headers=headers) as s:
            ports = [f"80 127.0.0.1:{mesh.origin.port}"]
            async with s.post(base, json={"ports": ports}) as r:
                assert r.status == 201
                created = await r.json()
            check("/onion-services", "post", 201, created)
            sid = created["service_id"]
            key = base64.b64decode(created["private_key"].removeprefix("ED25519-V3:"))
            assert encode_address(ExpandedKey.from_bytes(key).public) == created["address"] == sid + ".onion"

            async def published() -> bool:
                async with s.get(f"{base}/{sid}.onion") as r:
                    body = await r.json()
                    check("/onion-services/{service_id}", "get", 200, body)
                    return bool(body["state"] == "published")

            deadline = asyncio.get_running_loop().time() + WAIT  # a liveness bound only
            while not await published():
                assert asyncio.get_running_loop().time() < deadline, "not published"
                await asyncio.sleep(0.2)
            body = await asyncio.to_thread(
                http_get_via_socks, visitor.socks.port, created["address"], 80, "/blob/100000"
            )
            assert body == mesh.origin.blob(100000)
            # the service's circuits in the API and in `onionmesh circuit list`: purpose and service
            async with s.get(f"http://127.0.0.1:{control.port}/circuits") as r:
                circuits = await r.json()
            check("/circuits", "get", 200, circuits)
            intro = [c for c in circuits if c["purpose"] == "hs_service_intro" and c["state"] != "closed"]
            assert intro and all(c["hs_service_id"] == sid for c in intro)
            assert f"hs_service_intro {sid}.onion" in format_circuit(intro[0])
            assert all(c["hs_service_id"] is None for c in circuits if c["purpose"] == "general")
            async with s.get(base) as r:
                listed = await r.json()
            check("/onion-services", "get", 200, listed)
            assert [x["service_id"] for x in listed] == [sid]
            # the same key again: 409; a given key is not echoed back; discard_pk hides a new one
            async with s.post(base, json={"ports": ports, "key": created["private_key"]}) as r:
                assert r.status == 409
                check("/onion-services", "post", 409, await r.json())
            async with s.post(base, json={"ports": ["81"], "discard_pk": True}) as r:
                other = await r.json()
                assert r.status == 201 and "private_key" not in other
            for bad in ({}, {"ports": []}, {"ports": ["0 127.0.0.1:80"]}, {"ports": ["80"], "extra": 1},
                        {"ports": ["80"], "key": "ED25519-V3:AAAA"}, {"ports": ["80"], "client_auth": ["x"]},
                        [1]):  # fmt: skip
                async with s.post(base, json=bad) as r:
                    assert r.status == 400, bad
                    check("/onion-services", "post", 400, await r.json())
            async with s.delete(f"{base}/{sid}") as r:
                assert r.status == 200
                check("/onion-services/{service_id}", "delete", 200, await r.json())
            assert sid not in mesh.client.onion_services
            for method in (s.get, s.delete):
                async with method(f"{base}/{sid}") as r:
                    assert r.status == 404
    finally:
        await visitor.stop()
        await stop_mesh(mesh, extras)

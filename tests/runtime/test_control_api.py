"""The control API against its OpenAPI description (docs/openapi.json), on a live proxy."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import jsonschema
import pytest

from tests.runtime.conftest import Mesh, http_get_via_socks

SPEC = json.loads((Path(__file__).resolve().parents[2] / "docs" / "openapi.json").read_text())


def schema_for(path: str, method: str, status: int) -> dict | None:
    content = SPEC["paths"][path][method]["responses"][str(status)].get("content", {})
    schema = content.get("application/json", {}).get("schema")
    if schema is None:
        return None
    return {**schema, "components": SPEC["components"]}


def check(path: str, method: str, status: int, body: object) -> None:
    schema = schema_for(path, method, status)
    assert schema is not None, f"{method.upper()} {path} {status} is not documented"
    resolver_schema = {"$defs": {}, **schema}
    jsonschema.validate(body, resolver_schema, cls=jsonschema.Draft202012Validator)


@pytest.fixture
async def api(mesh: Mesh):
    control = mesh.client.control
    assert control is not None
    base = f"http://127.0.0.1:{control.port}"
    async with aiohttp.ClientSession(headers={"Authorization": "Cookie " + control.cookie.hex()}) as session:
        yield base, session


async def test_every_route_is_documented_and_every_documented_path_exists(mesh: Mesh) -> None:
    app = mesh.client.control._runner.app  # type: ignore[union-attr]
    served = {(r.method.lower(), r.resource.canonical) for r in app.router.routes() if r.method != "HEAD"}
    documented = {(m, p) for p, ops in SPEC["paths"].items() for m in ops if m != "parameters"}
    assert served == documented


async def test_responses_match_their_schemas(mesh: Mesh, api) -> None:
    base, s = api
    body = await asyncio.to_thread(
        http_get_via_socks, mesh.socks_port, "localhost", mesh.origin.port, "/blob/10"
    )
    assert body == mesh.origin.blob(10)
    for path in ("/status", "/circuits", "/streams", "/relays"):
        async with s.get(base + path) as r:
            assert r.status == 200
            check(path, "get", 200, await r.json())
    async with s.post(base + "/circuits", json={"hops": 2}) as r:
        assert r.status == 200
        built = await r.json()
        check("/circuits", "post", 200, built)
        assert len(built["hops"]) == 2 and all(h["rtt_ms"] is not None for h in built["hops"])
        assert {h["layer"] for h in built["hops"]} <= {"AES_GCM", "XCHACHA"}
    async with s.get(f"{base}/circuits/{built['id']}") as r:
        check("/circuits/{number}", "get", 200, await r.json())
    for bad in ({"hops": 0}, {"hops": "x"}, {"via": "notalist"}, {"unknown": 1}, [1, 2]):
        async with s.post(base + "/circuits", json=bad) as r:
            assert r.status == 400
            check("/circuits", "post", 400, await r.json())
    async with s.post(base + "/circuits", data=b"{not json") as r:
        assert r.status == 400
    async with s.delete(f"{base}/circuits/{built['id']}") as r:
        check("/circuits/{number}", "delete", 200, await r.json())
    async with s.delete(f"{base}/circuits/{built['id']}") as r:
        assert r.status == 404
        check("/circuits/{number}", "delete", 404, await r.json())
    async with s.post(base + "/newnym") as r:
        check("/newnym", "post", 200, await r.json())


async def test_no_cookie_no_access(mesh: Mesh) -> None:
    control = mesh.client.control
    assert control is not None
    base = f"http://127.0.0.1:{control.port}"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        for path in ("/status", "/circuits", "/relays", "/streams"):
            async with s.get(base + path) as r:
                assert r.status == 401
                check("/status", "get", 401, await r.json())
        async with s.get(base + "/circuits", headers={"Authorization": "Cookie " + "00" * 32}) as r:
            assert r.status == 401
        async with s.get(base + "/login?token=guess") as r:
            assert r.status == 401
        link = control.login_link()
        async with s.get(link, allow_redirects=False) as r:
            assert r.status == 302
        async with s.get(base + "/status") as r:  # the session cookie now authenticates
            assert r.status == 200
        async with aiohttp.ClientSession() as fresh, fresh.get(link, allow_redirects=False) as r:
            assert r.status == 401  # one time only


async def test_events_report_builds_hop_by_hop_and_traffic(mesh: Mesh, api) -> None:
    base, s = api
    async with s.ws_connect(base + "/events") as ws:
        async with s.post(base + "/circuits", json={"hops": 3}) as r:
            built = await r.json()
        seen: list[tuple[str, int]] = []
        traffic = False
        deadline = asyncio.get_running_loop().time() + 5
        while asyncio.get_running_loop().time() < deadline and not (
            traffic and ("built", built["id"]) in seen
        ):
            msg = await ws.receive(timeout=3)
            event = json.loads(msg.data)
            if event["type"] == "circuit":
                seen.append((event["what"], event["circuit"]["id"]))
            traffic |= event["type"] == "traffic"
        mine = [w for w, i in seen if i == built["id"]]
        assert mine[:1] == ["launched"] and mine.count("extended") == 3 and "built" in mine
        assert traffic

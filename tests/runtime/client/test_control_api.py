"""The control API against its OpenAPI description (docs/openapi.json), on a live proxy."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import aiohttp
import jsonschema
import pytest

from tests.helpers.mesh import Mesh, http_get_via_socks

SPEC = json.loads((Path(__file__).resolve().parents[3] / "docs" / "openapi.json").read_text())


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
        assert built["hops"][-1]["exit"] is True  # an exit relay, so the status page may say EXIT
        assert {h["layer"] for h in built["hops"]} <= {"AES_GCM", "XCHACHA"}
    async with s.get(f"{base}/circuits/{built['id']}") as r:
        check("/circuits/{number}", "get", 200, await r.json())
    for bad in ({"hops": 0}, {"hops": "x"}, {"via": "notalist"}, {"unknown": 1}, [1, 2]):
        async with s.post(base + "/circuits", json=bad) as r:
            assert r.status == 400
            check("/circuits", "post", 400, await r.json())
    async with s.post(
        base + "/circuits", data=b"{not json", headers={"Content-Type": "application/json"}
    ) as r:
        assert r.status == 400
    async with s.delete(f"{base}/circuits/{built['id']}") as r:
        check("/circuits/{number}", "delete", 200, await r.json())
    async with s.delete(f"{base}/circuits/{built['id']}") as r:
        assert r.status == 404
        check("/circuits/{number}", "delete", 404, await r.json())
    async with s.post(base + "/newnym", headers={"Content-Type": "application/json"}) as r:
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


# --- requests a web page could make (issue 15, item 2) -----------------------------------------------
def documented(path: str, method: str, status: int) -> dict:
    response = SPEC["paths"][path][method]["responses"][str(status)]
    if "$ref" in response:
        response = SPEC["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    return response


def raw_request(port: int, head: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request over a plain socket to 127.0.0.1 (any Host header: DNS rebinding's view)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head.replace("\n", "\r\n").encode() + b"Connection: close\r\n\r\n" + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    top, _, payload = data.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return int(lines[0].split()[1]), headers, payload


async def test_a_rebinding_host_header_is_refused_even_with_the_cookie(mesh: Mesh) -> None:
    control = mesh.client.control
    assert control is not None
    auth = "Authorization: Cookie " + control.cookie.hex() + "\n"
    port = control.port
    for host, want in (
        (f"evil.example:{port}", 421),
        ("evil.example", 421),
        (f"127.0.0.1.evil.example:{port}", 421),
        (f"127.0.0.1:{port}", 200),
        (f"localhost:{port}", 200),
        (f"[::1]:{port}", 200),
    ):
        status, headers, body = await asyncio.to_thread(
            raw_request, port, f"GET /circuits HTTP/1.1\nHost: {host}\n{auth}"
        )
        assert status == want, (host, status, body)
        if want == 421:
            assert b"fingerprint" not in body
            assert set(json.loads(body)) == {"error"}
            assert documented("/circuits", "get", 421)["content"]["application/json"]
    # The WebSocket handshake and a login link too; a refused login does not spend the token.
    ws_head = (
        f"GET /events HTTP/1.1\nHost: evil.example:{port}\n{auth}Upgrade: websocket\nConnection: Upgrade\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\nSec-WebSocket-Version: 13\n"
    )
    status, _h, _b = await asyncio.to_thread(raw_request, port, ws_head)
    assert status == 421
    path = control.login_link().split(str(port), 1)[1]
    status, _h, _b = await asyncio.to_thread(raw_request, port, f"GET {path} HTTP/1.1\nHost: evil.example\n")
    assert status == 421
    status, headers, _b = await asyncio.to_thread(
        raw_request, port, f"GET {path} HTTP/1.1\nHost: 127.0.0.1\n"
    )
    assert status == 302 and "om_session=" in headers["set-cookie"]
    assert control.refused["host"] == 5


async def test_posts_need_application_json(mesh: Mesh, api) -> None:
    base, s = api
    launched: list[int] = []
    mesh.client.circuits.listeners.append(
        lambda what, h: launched.append(h.number) if what == "launched" else None
    )
    form = aiohttp.FormData({'{"hops": 1, "x": "': '"}'})
    for kwargs in (
        {"data": b'{"hops": 1}', "headers": {"Content-Type": "text/plain"}},
        {"data": b'{"hops": 1}', "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
        {"data": form},
        {"data": b'{"hops": 1}'},  # aiohttp: application/octet-stream
    ):
        async with s.post(base + "/circuits", **kwargs) as r:
            assert r.status == 415, kwargs
            assert "application/json" in (await r.json())["error"]
    for path in ("/newnym", "/login-link"):
        async with s.post(base + path) as r:
            assert r.status == 415
    assert launched == []
    async with s.post(base + "/circuits", json={"hops": 1}) as r:
        assert r.status == 200
    assert len(launched) == 1


async def test_requests_from_another_origin_are_refused(mesh: Mesh, api) -> None:
    base, s = api
    control = mesh.client.control
    assert control is not None
    other = "http://127.0.0.1:1"  # another port of the same host: the same site, not the same origin
    async with s.get(base + "/circuits", headers={"Origin": other}) as r:
        assert r.status == 403
    async with s.get(base + "/circuits", headers={"Origin": base}) as r:
        assert r.status == 200
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await s.ws_connect(base + "/events", origin=other)
    assert refused.value.status == 403
    # A browser session (the status page's cookie): only its own origin, and Origin on POST and WebSocket.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.get(control.login_link(), allow_redirects=False) as r:
            assert r.status == 302
        async with browser.get(base + "/status") as r:
            assert r.status == 200
        for site in ("same-site", "cross-site"):
            async with browser.get(base + "/status", headers={"Sec-Fetch-Site": site}) as r:
                assert r.status == 403, site
        async with browser.get(base + "/status", headers={"Sec-Fetch-Site": "same-origin"}) as r:
            assert r.status == 200
        async with browser.post(base + "/newnym", json={}) as r:
            assert r.status == 403  # no Origin: not the status page
        async with browser.post(base + "/newnym", json={}, headers={"Origin": base}) as r:
            assert r.status == 200
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await browser.ws_connect(base + "/events")
        async with browser.ws_connect(base + "/events", origin=base) as ws:
            assert (await ws.receive_json(timeout=5))["type"] == "traffic"
    assert control.refused["origin"] == 4 and control.refused["fetch-site"] == 2


async def test_sessions_and_login_links_expire_on_the_injected_clock(mesh: Mesh) -> None:
    from onionmesh.runtime.client.control import LOGIN_TOKEN_LIFETIME, SESSION_LIFETIME, ControlServer

    now = [1000.0]
    control = mesh.client.control
    assert control is not None
    server = ControlServer(mesh.client, "127.0.0.1", 0, control.cookie, clock=lambda: now[0])
    await server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            stale = server.login_link()
            async with browser.get(server.login_link(), allow_redirects=False) as r:
                assert r.status == 302
                assert f"Max-Age={int(SESSION_LIFETIME)}" in r.headers["Set-Cookie"]
            now[0] += SESSION_LIFETIME - 1
            async with browser.get(base + "/status") as r:
                assert r.status == 200
            async with aiohttp.ClientSession() as other, other.get(stale, allow_redirects=False) as r:
                assert r.status == 401 and "expired" in await r.text()  # 10 minutes are long gone
            now[0] += 2
            async with browser.get(base + "/status") as r:
                assert r.status == 401
                assert "session has expired" in (await r.json())["error"]
            fresh = server.login_link()
            now[0] += LOGIN_TOKEN_LIFETIME - 1
            async with browser.get(fresh, allow_redirects=False) as r:
                assert r.status == 302
    finally:
        await server.stop()


async def test_a_used_login_link_says_so_in_a_page(mesh: Mesh) -> None:
    control = mesh.client.control
    assert control is not None
    link = control.login_link()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.get(link, allow_redirects=False) as r:
            assert r.status == 302
        async with browser.get(link, allow_redirects=False) as r:  # the same browser: back to the page
            assert r.status == 302 and r.headers["Location"] == "/status-page"
    async with aiohttp.ClientSession() as other:
        async with other.get(link) as r:
            assert r.status == 401 and r.content_type == "text/html"
            page = await r.text()
            assert "already been used" in page and "onionmesh status-page" in page
            assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
        async with other.get(link.split("token=")[0] + "token=never-issued") as r:
            assert r.status == 401 and "not known" in await r.text()


async def test_every_answer_forbids_framing_and_sniffing(mesh: Mesh, api) -> None:
    base, s = api
    async with aiohttp.ClientSession() as anonymous:
        answers = [
            await s.get(base + "/circuits"),
            await s.get(base + "/circuits/999999"),
            await s.post(base + "/circuits", data=b"x"),
            await anonymous.get(base + "/status"),
            await anonymous.get(base + "/login?token=x"),
        ]
        for r in answers:
            assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"], r.url
            assert r.headers["X-Frame-Options"] == "DENY"
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            r.release()
        assert [r.status for r in answers] == [200, 404, 415, 401, 401]


async def test_no_cookie_a_wrong_cookie_and_an_expired_session_say_different_things(mesh: Mesh) -> None:
    control = mesh.client.control
    assert control is not None
    base = f"http://127.0.0.1:{control.port}"
    async with aiohttp.ClientSession() as s:
        async with s.get(base + "/status") as r:
            none = (await r.json())["error"]
        async with s.get(base + "/status", headers={"Authorization": "Cookie " + "00" * 32}) as r:
            wrong = (await r.json())["error"]
        async with s.get(base + "/status", headers={"Cookie": "om_session=forgotten"}) as r:
            gone = (await r.json())["error"]
    assert "send the control cookie" in none
    assert wrong.startswith("wrong control cookie") and "send the control cookie" not in wrong
    assert "session has expired" in gone

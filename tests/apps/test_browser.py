"""A real headless Chromium against onionmesh: the status page (screenshot + rendered DOM), and a web
page fetched through the mesh by a name that only the exit can resolve.

Chromium runs as tests/helpers/chromium.py starts it (the project's flags, a fresh profile in
tmp_path). The screenshot is kept under artifacts/ (git-ignored).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import html
import json
import re
import secrets
import shutil
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from onionmesh.runtime.client.control import ControlServer
from onionmesh.runtime.relay.node import RelayConfig
from tests.helpers.chromium import (
    ARTIFACTS,
    live_chromium,
    needs_chromium,
    run_chromium,
    traffic_through,
    wait_for_streams,
)
from tests.helpers.mesh import Mesh, http_get_via_socks, serve, start_mesh, stop_mesh

HAS_RESOLVE_OVERRIDES = "resolve_overrides" in {f.name for f in dataclasses.fields(RelayConfig)}
TEST_NAME = "www.onionmesh-test.internal"


# --- the page itself, without a browser ----------------------------------------------------------------
async def test_status_page_needs_login_and_sets_a_strict_csp(page_mesh: tuple[Mesh, ControlServer]) -> None:
    _mesh, server = page_mesh
    base = f"http://127.0.0.1:{server.port}"
    # unsafe=True: keep cookies set by an IP address (the control port is on 127.0.0.1)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.get(f"{base}/status-page") as r:
            assert r.status == 401  # no cookie, no page
        async with session.get(server.login_link()) as r:  # follows the redirect, keeps the cookie
            assert r.status == 200
            assert r.url.path == "/status-page"
            page = await r.text()
            csp = r.headers["Content-Security-Policy"]
            assert r.headers["X-Content-Type-Options"] == "nosniff"
        async with session.get(f"{base}/status-page") as r2:
            assert r2.status == 200
            csp2 = r2.headers["Content-Security-Policy"]

    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'self'"
    nonce = re.fullmatch(r"'nonce-([A-Za-z0-9_-]{16,})'", directives["script-src"])
    assert nonce, csp
    assert "unsafe-eval" not in csp and "*" not in csp
    assert directives["connect-src"].split()[0] == "'self'"
    assert all(
        src in ("'self'", f"ws://127.0.0.1:{server.port}") for src in directives["connect-src"].split()
    )
    assert directives["frame-ancestors"] == "'none'"
    assert csp2 != csp  # a fresh nonce for every response
    # Every script and style carries the nonce; nothing is loaded from anywhere.
    assert page.count("<script") == page.count(f'<script nonce="{nonce.group(1)}">') == 1
    assert page.count("<style") == page.count(f'<style nonce="{nonce.group(1)}">') == 1
    assert not re.search(r"""(src|href)\s*=|https?://|@import|url\(""", page, re.I)
    assert "innerHTML" not in page and "insertAdjacentHTML" not in page and "document.write" not in page
    assert "<canvas" in page and "/events" in page


# --- the status page in Chromium -----------------------------------------------------------------------
@needs_chromium
async def test_status_page_in_chromium_draws_the_circuits(
    page_mesh: tuple[Mesh, ControlServer], tmp_path: Path
) -> None:
    mesh, server = page_mesh
    # Some history for the byte counters: one finished download.
    await asyncio.to_thread(
        http_get_via_socks, mesh.socks_port, "127.0.0.1", mesh.origin.port, "/blob/100000"
    )
    with traffic_through(mesh) as fetched:
        await wait_for_streams(mesh, 2)
        shot = tmp_path / "status-page.png"
        code, _out, err = await run_chromium(
            tmp_path / "profile-shot",
            f"--screenshot={shot}",
            "--window-size=1280,900",
            "--hide-scrollbars",
            "--virtual-time-budget=5000",
            server.login_link(),
        )
        assert code == 0, err[-2000:]
        before = {h.number: [d.nickname for d in h.path] for h in mesh.client.circuits.circuits.values()}
        code, dom, err = await run_chromium(
            tmp_path / "profile-dom", "--dump-dom", "--virtual-time-budget=5000", server.login_link()
        )
        assert code == 0, err[-2000:]
        after = {h.number: [d.nickname for d in h.path] for h in mesh.client.circuits.circuits.values()}
        assert fetched, "no traffic went through the mesh while the page was open"

    assert shot.exists() and shot.stat().st_size > 10_000, "the screenshot is missing or blank"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(shot, ARTIFACTS / "status-page.png")
    (ARTIFACTS / "status-page.html").write_text(dom)

    text = html.unescape(re.sub(r"<[^>]+>", " ", dom))
    assert "This browser" in text and "destination" in text and "EXIT" in text
    assert "authentication required" not in text and "session has expired" not in text
    assert re.search(r'<div id="live" class="on">', dom), "the page's WebSocket did not connect"
    stable = {n: path for n, path in before.items() if after.get(n) == path}
    assert stable, "no circuit lived through the page load"
    for number, path in stable.items():
        assert f"Circuit {number}" in text, number
        for nickname in path:
            assert re.search(rf"\b{re.escape(nickname)}\b", text), (number, nickname)
    assert "tab-news" in text  # the isolation label of the second stream's circuit
    assert re.search(r"RTT \d+(\.\d)? ms", text)
    assert re.search(r"127\.\d+\.0\.1:\d+", text)  # the hops' addresses


PAGE_STATE = """JSON.stringify({
  live: document.getElementById("live").className,
  rateIn: document.getElementById("rate-in").textContent,
  totIn: document.getElementById("tot-in").textContent,
  events: document.getElementById("events").textContent,
  circuits: document.getElementById("circuits").textContent,
  purple: (function () {
    var c = document.getElementById("graph");
    var d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    var n = 0;
    for (var i = 0; i < d.length; i += 4) {
      if (d[i + 3] > 200 && d[i] > 95 && d[i] < 155 && d[i + 1] < 100 && d[i + 2] > 120) { n++; }
    }
    return n;
  })()
})"""


@needs_chromium
async def test_status_page_live_in_chromium_follows_events(
    page_mesh: tuple[Mesh, ControlServer], tmp_path: Path
) -> None:
    """The page left open in real time: the WebSocket (cookie sent, allowed by the CSP) feeds the traffic
    graph, and a circuit built meanwhile shows up in the event list and in the picture."""
    mesh, server = page_mesh
    with traffic_through(mesh):
        await wait_for_streams(mesh, 2)
        async with live_chromium(tmp_path / "profile-live", server.login_link()) as (cdp, session):
            await asyncio.sleep(1.5)
            handle = await mesh.client.circuits.build(isolation=("control",))
            await asyncio.sleep(3.0)
            result = await cdp.call(
                "Runtime.evaluate", {"expression": PAGE_STATE, "returnByValue": True}, session
            )
            state = json.loads(result["result"]["value"])
            size = (await cdp.call("Page.getLayoutMetrics", {}, session))["cssContentSize"]
            clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
            params = {"format": "png", "clip": clip, "captureBeyondViewport": True}
            shot = base64.b64decode((await cdp.call("Page.captureScreenshot", params, session))["data"])
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "status-page-live.png").write_bytes(shot)
    (tmp_path / "status-page-live.png").write_bytes(shot)
    assert len(shot) > 10_000
    assert state["live"] == "on", state  # the WebSocket is connected
    assert state["rateIn"] != "0 B/s" and state["totIn"] != "0 B", state  # traffic events arrived
    assert state["purple"] > 50, state  # and were plotted
    assert f"circuit {handle.number} built" in state["events"], state["events"]
    assert f"Circuit {handle.number}" in state["circuits"]
    assert all(d.nickname in state["circuits"] for d in handle.path)


# --- a real browser through the mesh, DNS at the exit ------------------------------------------------
async def start_mesh_with_overrides(
    tmp_path: Path, overrides: dict[str, list[str]], *, relays: int = 5, exits: int = 3
) -> tuple[Mesh, list[object]]:
    """A mesh whose exits resolve `overrides` themselves (and one pre-built circuit)."""
    return await start_mesh(tmp_path, relays=relays, exits=exits, prebuilt=1, resolve_overrides=overrides)


@needs_chromium
@pytest.mark.skipif(
    not HAS_RESOLVE_OVERRIDES, reason="RelayConfig has no resolve_overrides (exit-side names)"
)
async def test_chromium_through_the_mesh_resolves_at_the_exit(tmp_path: Path) -> None:
    # The premise, by construction: TEST_NAME is under .internal and in no hosts file, so only the exits'
    # overrides know it. The test never asks a resolver itself: no query may leave loopback.
    marker = f"onionmesh-marker-{secrets.token_hex(12)}"
    seen: list[tuple[str, str]] = []

    async def index(request: web.Request) -> web.Response:
        seen.append((request.host, request.remote or ""))
        page = (
            f"<!DOCTYPE html><html><head><title>test</title></head><body><p id=m>{marker}</p></body></html>"
        )
        return web.Response(text=page, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", index)
    site_runner, port = await serve(app)

    mesh, extras = await start_mesh_with_overrides(tmp_path, {TEST_NAME: ["127.0.0.1"]})
    try:
        await mesh.client.wait_ready()
        code, dom, err = await run_chromium(
            tmp_path / "profile",
            f"--proxy-server=socks5://127.0.0.1:{mesh.socks_port}",
            "--dump-dom",
            "--virtual-time-budget=5000",
            f"http://{TEST_NAME}:{port}/",
        )
        assert code == 0, err[-2000:]
        assert marker in dom, (dom[:500], err[-2000:])
        exits = {r.config.listen_host for r in mesh.relays if r.exit_rules is not None}
        assert seen and all(host == f"{TEST_NAME}:{port}" for host, _ in seen), seen
        assert all(remote in exits for _, remote in seen), (seen, exits)  # it came from an exit
    finally:
        await stop_mesh(mesh, extras)
        await site_runner.cleanup()

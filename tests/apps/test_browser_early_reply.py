"""Headless Chromium through the mesh with optimistic data and early SOCKS successes: a page with
many images from one origin, loaded twice (two browser runs, fresh profiles); every image arrives
whole both times, and the second run's connections were answered before CONNECTED
(docs/protocol.md §14.6)."""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp import web

from tests.helpers.chromium import needs_chromium, run_chromium
from tests.helpers.mesh import serve, start_mesh, stop_mesh

IMAGES = 12
# a 1x1 GIF: small answers, many connections' worth of requests
GIF = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")


@needs_chromium
async def test_chromium_loads_every_image_through_early_successes(tmp_path: Path) -> None:
    served: list[str] = []

    async def index(request: web.Request) -> web.Response:
        imgs = "".join(f'<img src="/i/{i}.gif" onload="done()">' for i in range(IMAGES))
        page = (
            "<!DOCTYPE html><html><head><title>t</title><script>let n = 0;"
            "function done() { n++; document.getElementById('c').textContent = 'loaded=' + n; }"
            f"</script></head><body><p id=c>loaded=0</p>{imgs}</body></html>"
        )
        return web.Response(text=page, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def image(request: web.Request) -> web.Response:
        served.append(request.match_info["n"])
        return web.Response(body=GIF, content_type="image/gif", headers={"Cache-Control": "no-store"})

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/i/{n}.gif", image)
    site, port = await serve(app)
    mesh, extras = await start_mesh(tmp_path, relays=4, exits=1)
    try:
        for run in range(2):
            code, dom, err = await run_chromium(
                tmp_path / f"profile{run}",
                f"--proxy-server=socks5://127.0.0.1:{mesh.socks_port}",
                "--dump-dom",
                "--virtual-time-budget=10000",
                f"http://127.0.0.1:{port}/",
            )
            assert code == 0, err[-2000:]
            loaded = re.search(r"loaded=(\d+)", dom)
            assert loaded is not None and int(loaded[1]) == IMAGES, (dom[:800], err[-2000:])
        assert sorted(served) == sorted([str(i) for i in range(IMAGES)] * 2)
        assert mesh.client.socks.requests.answered_early >= 1  # the second run's connections at least
    finally:
        await stop_mesh(mesh, extras)
        await site.cleanup()

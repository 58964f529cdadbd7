"""The control API: JSON over HTTP on loopback, authenticated by a 32-byte cookie file (0600).

Like Tor's CookieAuthentication: whoever can read DATA_DIR/control_auth_cookie may control the
proxy.  Requests carry it hex-encoded in the `Authorization: Cookie <hex>` header; anything
else gets 401.  Endpoints: GET /status, GET /circuits, POST /circuits, DELETE /circuits/{id},
POST /newnym.
"""

from __future__ import annotations

import hmac
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from onionmesh.errors import OnionmeshError
from onionmesh.runtime.circuits import CircuitHandle
from onionmesh.runtime.keystore import write_secret

if TYPE_CHECKING:
    from onionmesh.runtime.client_node import ClientNode

COOKIE_NAME = "control_auth_cookie"


def load_or_create_cookie(data_dir: Path, random_bytes: bytes) -> bytes:
    path = Path(data_dir) / COOKIE_NAME
    write_secret(path, random_bytes)
    return random_bytes


def circuit_json(handle: CircuitHandle) -> dict[str, Any]:
    now = time.monotonic()
    return {
        "id": handle.number,
        "state": "closed" if handle.closed_reason else handle.circ.state.value,
        "hops": [
            {
                "fingerprint": d.fingerprint,
                "nickname": d.nickname,
                "address": f"{d.link_addresses[0][0]}:{d.link_addresses[0][1]}",
                "build_ms": round(handle.hop_times[i] * 1000, 2) if i < len(handle.hop_times) else None,
            }
            for i, d in enumerate(handle.path)
        ],
        "age_s": round(now - handle.created_at, 1),
        "streams": len(handle.circ.streams),
        "bytes_in": handle.circ.bytes_in,
        "bytes_out": handle.circ.bytes_out,
    }


class ControlServer:
    def __init__(self, node: ClientNode, host: str, port: int, cookie: bytes) -> None:
        self.node = node
        self.host = host
        self.port = port
        self.cookie = cookie
        self._runner: web.AppRunner | None = None

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        try:
            given = bytes.fromhex(value.strip())
        except ValueError:
            given = b""
        if scheme != "Cookie" or not hmac.compare_digest(given, self.cookie):
            return web.json_response({"error": "authentication required"}, status=401)
        try:
            return await handler(request)
        except OnionmeshError as exc:
            return web.json_response({"error": str(exc)}, status=400)

    async def start(self) -> None:
        app = web.Application(middlewares=[self._auth], client_max_size=64 * 1024)
        app.router.add_get("/status", self._status)
        app.router.add_get("/circuits", self._list)
        app.router.add_post("/circuits", self._build)
        app.router.add_delete("/circuits/{number}", self._close)
        app.router.add_post("/newnym", self._newnym)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _status(self, _request: web.Request) -> web.Response:
        return web.json_response(self.node.status())

    async def _list(self, _request: web.Request) -> web.Response:
        return web.json_response([circuit_json(h) for h in self.node.circuits.circuits.values()])

    async def _build(self, request: web.Request) -> web.Response:
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            return web.json_response({"error": "body is not JSON"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"error": "body must be an object"}, status=400)
        hops = body.get("hops")
        via = body.get("via")
        if hops is not None and (not isinstance(hops, int) or not 1 <= hops <= 8):
            return web.json_response({"error": "hops must be 1..8"}, status=400)
        if via is not None and (not isinstance(via, list) or not all(isinstance(v, str) for v in via)):
            return web.json_response({"error": "via must be a list of fingerprints"}, status=400)
        exit_fp = body.get("exit")
        if exit_fp is not None and not isinstance(exit_fp, str):
            return web.json_response({"error": "exit must be a fingerprint"}, status=400)
        try:
            handle = await self.node.circuits.build(
                hops=hops, exit_fp=exit_fp, via=via, isolation=("control",)
            )
        except (OSError, TimeoutError) as exc:
            return web.json_response(
                {"error": f"circuit build failed: {type(exc).__name__} {exc}"}, status=502
            )
        return web.json_response(circuit_json(handle))

    async def _close(self, request: web.Request) -> web.Response:
        try:
            number = int(request.match_info["number"])
        except ValueError:
            return web.json_response({"error": "no such circuit"}, status=404)
        if not self.node.circuits.close_circuit(number):
            return web.json_response({"error": "no such circuit"}, status=404)
        return web.json_response({"closed": number})

    async def _newnym(self, _request: web.Request) -> web.Response:
        self.node.circuits.retire_all()
        return web.json_response({"ok": True})

"""The control API: JSON over HTTP on loopback, authenticated like Tor's CookieAuthentication.

Whoever can read DATA_DIR/control_auth_cookie (32 random bytes, 0600) controls the proxy: a
request carries it hex-encoded as `Authorization: Cookie <hex>`. A browser cannot add that
header, so the proxy also prints a one-time login link (`/login?token=...`, valid 10 minutes,
usable once) that sets an HttpOnly, SameSite=Strict session cookie for the status page.
Anything else gets 401. Endpoints and events: docs/control-api.md (and its OpenAPI file).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from onionmesh.directory.path_selection import exit_accepts_port
from onionmesh.errors import OnionmeshError
from onionmesh.runtime.circuits import CircuitHandle
from onionmesh.runtime.keystore import write_secret

if TYPE_CHECKING:
    from onionmesh.directory.descriptor import RelayDescriptor
    from onionmesh.runtime.client_node import ClientNode

COOKIE_NAME = "control_auth_cookie"
SESSION_COOKIE = "om_session"
LOGIN_TOKEN_LIFETIME = 600.0
MAX_EVENT_CLIENTS = 16
TRAFFIC_INTERVAL = 1.0


def load_or_create_cookie(data_dir: Path, random_bytes: bytes) -> bytes:
    write_secret(Path(data_dir) / COOKIE_NAME, random_bytes)
    return random_bytes


def circuit_json(handle: CircuitHandle) -> dict[str, Any]:
    now = time.monotonic()
    username = handle.isolation[0] if isinstance(handle.isolation, tuple) and handle.isolation else None
    return {
        "id": handle.number,
        "state": "closed" if handle.closed_reason else handle.circ.state.value,
        "hops": [
            {
                "fingerprint": d.fingerprint,
                "nickname": d.nickname,
                "address": f"{d.link_addresses[0][0]}:{d.link_addresses[0][1]}",
                # The EXTEND round trip to this hop: the client's measured RTT to it.
                "rtt_ms": round(handle.hop_times[i] * 1000, 2) if i < len(handle.hop_times) else None,
                # the relay-crypto layer suite the circuit handshake chose for this hop
                "layer": handle.circ.hops[i].forward.suite.name if i < len(handle.circ.hops) else None,
            }
            for i, d in enumerate(handle.path)
        ],
        "age_s": round(now - handle.created_at, 1),
        "dirty": handle.dirty_since is not None,
        "isolation": username.decode("utf-8", "replace") if isinstance(username, bytes) else username,
        "streams": len(handle.circ.streams),
        "bytes_in": handle.circ.bytes_in,
        "bytes_out": handle.circ.bytes_out,
        "closed_reason": handle.closed_reason,
    }


def stream_json(handle: CircuitHandle, stream_id: int) -> dict[str, Any]:
    stream = handle.circ.streams.get(stream_id)
    return {
        "circuit": handle.number,
        "stream": stream_id,
        "state": stream.state.value if stream else "closed",
        "bytes_in": stream.bytes_in if stream else 0,
        "bytes_out": stream.bytes_out if stream else 0,
        "exit": handle.exit.nickname,
    }


def relay_json(desc: RelayDescriptor, guards: list[str], now: float) -> dict[str, Any]:
    return {
        "fingerprint": desc.fingerprint,
        "nickname": desc.nickname,
        "address": f"{desc.link_addresses[0][0]}:{desc.link_addresses[0][1]}",
        "exit": desc.is_exit,
        "web_exit": exit_accepts_port(desc, 443) or exit_accepts_port(desc, 80),
        "guard": desc.fingerprint in guards,
        "bandwidth": desc.bandwidth,
        "published_age_s": round(now - desc.published),
    }


def _bad(message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": message}, status=status)


class ControlServer:
    def __init__(self, node: ClientNode, host: str, port: int, cookie: bytes) -> None:
        self.node = node
        self.host = host
        self.port = port
        self.cookie = cookie
        self._runner: web.AppRunner | None = None
        self._login_tokens: dict[str, float] = {}
        self._sessions: set[str] = set()
        self._sockets: set[web.WebSocketResponse] = set()
        self._traffic_task: asyncio.Task[None] | None = None
        self.extra_routes: list[tuple[str, str, Any]] = []  # (method, path, handler) added by the status page

    # --- authentication ------------------------------------------------------------------------
    def login_link(self) -> str:
        """A one-time link that opens the status page in a browser (valid 10 minutes, once)."""
        token = secrets.token_urlsafe(24)
        now = time.monotonic()
        self._login_tokens = {t: exp for t, exp in self._login_tokens.items() if exp > now}
        self._login_tokens[token] = now + LOGIN_TOKEN_LIFETIME
        return f"http://{self.host}:{self.port}/login?token={token}"

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme == "Cookie":
            try:
                return hmac.compare_digest(bytes.fromhex(value.strip()), self.cookie)
            except ValueError:
                return False
        session = request.cookies.get(SESSION_COOKIE, "").encode("utf-8", "surrogateescape")
        return any(hmac.compare_digest(session, s.encode()) for s in self._sessions)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/login":
            return await self._login(request)
        if not self._authorized(request):
            return _bad("authentication required: send the control cookie (Authorization: Cookie <hex>)", 401)
        try:
            return await handler(request)
        except OnionmeshError as exc:
            return _bad(str(exc))

    async def _login(self, request: web.Request) -> web.StreamResponse:
        token = request.query.get("token", "")
        expires = self._login_tokens.pop(token, None)
        if expires is None or expires < time.monotonic():
            return _bad("this login link is unknown, used or expired; ask the proxy for a new one", 401)
        session = secrets.token_urlsafe(32)
        self._sessions.add(session)
        response = web.HTTPFound("/status-page")
        response.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="Strict", path="/")
        raise response

    # --- life cycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application(middlewares=[self._auth], client_max_size=64 * 1024)
        routes = [
            ("GET", "/status", self._status),
            ("GET", "/circuits", self._list),
            ("POST", "/circuits", self._build),
            ("GET", "/circuits/{number}", self._show),
            ("DELETE", "/circuits/{number}", self._close),
            ("GET", "/streams", self._streams),
            ("GET", "/relays", self._relays),
            ("POST", "/newnym", self._newnym),
            ("POST", "/login-link", self._new_login_link),
            ("GET", "/events", self._events),
            ("GET", "/login", self._login),
            *self.extra_routes,
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.node.circuits.listeners.append(self._on_circuit)
        self.node.circuits.stream_listeners.append(self._on_stream)
        self._traffic_task = asyncio.create_task(self._traffic_loop(), name="control-traffic")

    async def stop(self) -> None:
        if self._traffic_task is not None:
            self._traffic_task.cancel()
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- endpoints ---------------------------------------------------------------------------------
    async def _status(self, _request: web.Request) -> web.Response:
        return web.json_response(self.node.status())

    async def _list(self, _request: web.Request) -> web.Response:
        return web.json_response([circuit_json(h) for h in self.node.circuits.circuits.values()])

    def _handle(self, request: web.Request) -> CircuitHandle | None:
        try:
            return self.node.circuits.circuits.get(int(request.match_info["number"]))
        except ValueError:
            return None

    async def _show(self, request: web.Request) -> web.Response:
        handle = self._handle(request)
        if handle is None:
            return _bad("no such circuit", 404)
        return web.json_response(
            circuit_json(handle) | {"stream_list": [stream_json(handle, s) for s in handle.circ.streams]}
        )

    async def _build(self, request: web.Request) -> web.Response:
        try:
            body = await request.json() if request.can_read_body else {}
        except (ValueError, LookupError, RecursionError):  # not JSON, an unknown charset, absurd nesting
            return _bad("body is not JSON")
        if not isinstance(body, dict) or set(body) - {"hops", "exit", "via"}:
            return _bad('body must be an object with optional "hops", "exit", "via"')
        hops, via, exit_fp = body.get("hops"), body.get("via"), body.get("exit")
        if hops is not None and (type(hops) is not int or not 1 <= hops <= 8):
            return _bad("hops must be 1..8")
        if via is not None and (not isinstance(via, list) or not all(isinstance(v, str) for v in via)):
            return _bad("via must be a list of fingerprints")
        if exit_fp is not None and not isinstance(exit_fp, str):
            return _bad("exit must be a fingerprint")
        try:
            handle = await self.node.circuits.build(
                hops=hops, exit_fp=exit_fp, via=via, isolation=("control",)
            )
        except (OSError, TimeoutError) as exc:
            return _bad(f"circuit build failed: {type(exc).__name__} {exc}", 502)
        return web.json_response(circuit_json(handle))

    async def _close(self, request: web.Request) -> web.Response:
        handle = self._handle(request)
        if handle is None or not self.node.circuits.close_circuit(handle.number):
            return _bad("no such circuit", 404)
        return web.json_response({"closed": handle.number})

    async def _streams(self, _request: web.Request) -> web.Response:
        circuits = list(self.node.circuits.circuits.values())
        return web.json_response([stream_json(h, s) for h in circuits for s in h.circ.streams])

    async def _relays(self, _request: web.Request) -> web.Response:
        relays = self.node.relays
        guards = self.node.policy.primary_guards(relays)
        now = time.time()
        return web.json_response(
            [relay_json(d, guards, now) for d in sorted(relays, key=lambda d: d.nickname)]
        )

    async def _newnym(self, _request: web.Request) -> web.Response:
        self.node.circuits.retire_all()
        return web.json_response({"ok": True})

    async def _new_login_link(self, _request: web.Request) -> web.Response:
        return web.json_response({"link": self.login_link()})

    # --- events ------------------------------------------------------------------------------------
    async def _events(self, request: web.Request) -> web.StreamResponse:
        if len(self._sockets) >= MAX_EVENT_CLIENTS:
            return _bad("too many event listeners", 503)
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=4096)
        await ws.prepare(request)
        self._sockets.add(ws)
        bytes_in, bytes_out = self.node.circuits.totals()  # a new listener gets the totals at once
        await ws.send_json(
            {
                "type": "traffic",
                "bytes_in_per_s": 0.0,
                "bytes_out_per_s": 0.0,
                "bytes_in": bytes_in,
                "bytes_out": bytes_out,
            }
        )
        try:
            async for msg in ws:  # clients only listen; anything they send is ignored
                if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    break
        finally:
            self._sockets.discard(ws)
        return ws

    def _broadcast(self, event: dict[str, Any]) -> None:
        text = json.dumps(event)
        for ws in list(self._sockets):
            if ws.closed:
                self._sockets.discard(ws)
                continue
            with contextlib.suppress(RuntimeError):  # no running loop: shutting down
                asyncio.get_running_loop().create_task(ws.send_str(text))

    def _on_circuit(self, what: str, handle: CircuitHandle) -> None:
        self._broadcast({"type": "circuit", "what": what, "circuit": circuit_json(handle)})

    def _on_stream(self, what: str, handle: CircuitHandle, stream_id: int) -> None:
        self._broadcast({"type": "stream", "what": what, "stream": stream_json(handle, stream_id)})

    async def _traffic_loop(self) -> None:
        last = self.node.circuits.totals()
        while True:
            await asyncio.sleep(TRAFFIC_INTERVAL)
            now = self.node.circuits.totals()
            if self._sockets:
                self._broadcast(
                    {
                        "type": "traffic",
                        "bytes_in_per_s": (now[0] - last[0]) / TRAFFIC_INTERVAL,
                        "bytes_out_per_s": (now[1] - last[1]) / TRAFFIC_INTERVAL,
                        "bytes_in": now[0],
                        "bytes_out": now[1],
                    }
                )
            last = now

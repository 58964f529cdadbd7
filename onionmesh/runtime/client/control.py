"""The control API: JSON over HTTP on loopback, authenticated like Tor's CookieAuthentication.

Whoever can read DATA_DIR/control_auth_cookie (32 random bytes, 0600) controls the proxy: a
request carries it hex-encoded as `Authorization: Cookie <hex>`. A browser cannot add that
header, so the proxy also prints a one-time login link (`/login?token=...`, valid 10 minutes,
usable once) that sets an HttpOnly, SameSite=Strict session cookie for the status page; a
session lasts 12 hours. Anything else gets 401. Endpoints and events: docs/control-api.md.

SameSite does not keep out a page on another port of 127.0.0.1 (the same *site*), and DNS
rebinding makes a page on any name same-origin with us; so every request must carry a Host
that rebinding cannot forge, a browser request must come from our own origin (Origin,
Sec-Fetch-Site), and a POST must say `Content-Type: application/json`, which no form and no
`no-cors` fetch can send (onionmesh.runtime.http_guard). No response may be framed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from aiohttp import WSMsgType, web

from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.errors import OnionmeshError
from onionmesh.runtime.client.circuit_manager import CircuitHandle, CircuitMgr
from onionmesh.runtime.client.control_json import circuit_json, relay_json, stream_json
from onionmesh.runtime.client.control_login import Logins, login_failed_page
from onionmesh.runtime.client.path_policy import PathPolicy
from onionmesh.runtime.http_guard import TRUSTED_FETCH_SITES, host_is_safe, origin_is_own
from onionmesh.runtime.keystore import write_secret

COOKIE_NAME = "control_auth_cookie"
SESSION_COOKIE = "om_session"
LOGIN_TOKEN_LIFETIME = 600.0
SESSION_LIFETIME = 12 * 3600.0
MAX_SESSIONS = 64  # the oldest session is forgotten past this; so are login tokens
MAX_LOGIN_TOKENS = 64
MAX_EVENT_CLIENTS = 16
TRAFFIC_INTERVAL = 1.0


def load_or_create_cookie(data_dir: Path, random_bytes: bytes) -> bytes:
    write_secret(Path(data_dir) / COOKIE_NAME, random_bytes)
    return random_bytes


def _bad(message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": message}, status=status)


# Headers on every answer: nothing may frame it (clickjacking), sniff it into a script, or cache it.
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}
DEFAULT_CSP = "default-src 'none'; frame-ancestors 'none'"
WRONG_COOKIE = (
    "wrong control cookie: it is not this proxy's current control_auth_cookie "
    "(the proxy writes a new one each time it starts)"
)
NO_CREDENTIALS = "authentication required: send the control cookie (Authorization: Cookie <hex>)"
SESSION_GONE = (
    "the session has expired or is unknown: ask the proxy for a new login link (onionmesh status-page)"
)


class ApiTarget(Protocol):
    """What the JSON control API reads and drives: the client node (runtime.client.node.ClientNode).
    Tor's control port has its own seam (runtime.torcontrol.target.ControlTarget)."""

    circuits: CircuitMgr
    policy: PathPolicy

    @property
    def relays(self) -> list[RelayDescriptor]: ...

    def status(self) -> dict[str, Any]: ...


class ControlServer:
    def __init__(
        self,
        node: ApiTarget,
        host: str,
        port: int,
        cookie: bytes,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node = node
        self.host = host
        self.port = port
        self.cookie = cookie
        self._runner: web.AppRunner | None = None
        self.logins = Logins(LOGIN_TOKEN_LIFETIME, SESSION_LIFETIME, MAX_SESSIONS, clock)
        self.refused: collections.Counter[str] = collections.Counter()  # why requests were turned away
        self._sockets: set[web.WebSocketResponse] = set()
        self._traffic_task: asyncio.Task[None] | None = None
        self.extra_routes: list[tuple[str, str, Any]] = []  # (method, path, handler) added by the status page

    # --- authentication ------------------------------------------------------------------------
    def login_link(self) -> str:
        """A one-time link that opens the status page in a browser (valid 10 minutes, once)."""
        return f"http://{self.host}:{self.port}/login?token={self.logins.new_token()}"

    def _credentials(self, request: web.Request) -> tuple[str | None, str]:
        """("cookie" or "session", "") if the request is authenticated, else (None, why not)."""
        authorization = request.headers.get("Authorization")
        if authorization is not None:
            scheme, _, value = authorization.partition(" ")
            if scheme != "Cookie":
                return None, "unsupported Authorization scheme: send Authorization: Cookie <hex>"
            try:
                good = hmac.compare_digest(bytes.fromhex(value.strip()), self.cookie)
            except ValueError:
                good = False
            return ("cookie", "") if good else (None, WRONG_COOKIE)
        session = request.cookies.get(SESSION_COOKIE)
        if session is None:
            return None, NO_CREDENTIALS
        return ("session", "") if self.logins.session_valid(session) else (None, SESSION_GONE)

    def _refuse(self, reason: str, message: str, status: int) -> web.Response:
        self.refused[reason] += 1
        return _bad(message, status)

    def _from_elsewhere(self, request: web.Request, how: str) -> web.Response | None:
        """A refusal if the request comes from anything but the proxy's own origin, else None."""
        host = request.headers.get("Host")
        if not host_is_safe(host, (self.host,)):
            return self._refuse(
                "host", "refused: the Host header must be this port's IP address or localhost", 421
            )
        origin = request.headers.get("Origin")
        if origin is not None and not origin_is_own(origin, host):
            return self._refuse("origin", "refused: a request from another web origin", 403)
        if how != "session":
            return None
        # A browser's request: it must be the status page's own (or typed by its user).
        if request.headers.get("Sec-Fetch-Site", "none") not in TRUSTED_FETCH_SITES:
            return self._refuse("fetch-site", "refused: a request from another web origin", 403)
        if origin is None and (request.method not in ("GET", "HEAD") or "Upgrade" in request.headers):
            return self._refuse("origin", "refused: a browser request without an Origin header", 403)
        return None

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/login":
            return self._from_elsewhere(request, "login") or await self._login(request)
        how, why_not = self._credentials(request)
        refusal = self._from_elsewhere(request, how or "none")
        if refusal is not None:
            return refusal
        if how is None:
            return self._refuse("auth", why_not, 401)
        if request.method == "POST" and (
            "Content-Type" not in request.headers or request.content_type != "application/json"
        ):
            # Forms and no-cors fetches can only send text/plain, urlencoded or multipart bodies.
            return self._refuse("content-type", "POST requests must say Content-Type: application/json", 415)
        try:
            return await handler(request)
        except OnionmeshError as exc:
            return _bad(str(exc))

    async def _login(self, request: web.Request) -> web.StreamResponse:
        state, session = self.logins.redeem(request.query.get("token", ""))
        if session is None:
            current = request.cookies.get(SESSION_COOKIE)
            if current is not None and self.logins.session_valid(current):
                raise web.HTTPFound("/status-page")  # a used link reopened in the browser it logged in
            return web.Response(
                status=401, text=login_failed_page(state), content_type="text/html", charset="utf-8"
            )
        response = web.HTTPFound("/status-page")
        response.set_cookie(
            SESSION_COOKIE,
            session,
            httponly=True,
            samesite="Strict",
            path="/",
            max_age=int(SESSION_LIFETIME),
        )
        raise response

    @staticmethod
    async def _security_headers(_request: web.Request, response: web.StreamResponse) -> None:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        response.headers.setdefault("Content-Security-Policy", DEFAULT_CSP)

    # --- life cycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application(middlewares=[self._auth], client_max_size=64 * 1024)
        app.on_response_prepare.append(self._security_headers)
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
    def _circuit(self, handle: CircuitHandle) -> dict[str, Any]:
        return circuit_json(handle, self.node.policy.country)

    async def _status(self, _request: web.Request) -> web.Response:
        return web.json_response(self.node.status())

    async def _list(self, _request: web.Request) -> web.Response:
        return web.json_response([self._circuit(h) for h in self.node.circuits.circuits.values()])

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
            self._circuit(handle) | {"stream_list": [stream_json(handle, s) for s in handle.circ.streams]}
        )

    async def _build(self, request: web.Request) -> web.Response:
        try:
            body = await request.json() if request.can_read_body else {}
        except (ValueError, LookupError, RecursionError):  # not JSON, an unknown charset, absurd nesting
            return _bad("body is not JSON")
        if not isinstance(body, dict) or set(body) - {"hops", "exit", "via", "exit_country"}:
            return _bad('body must be an object with optional "hops", "exit", "via", "exit_country"')
        hops, via, exit_fp = body.get("hops"), body.get("via"), body.get("exit")
        country = body.get("exit_country")
        if hops is not None and (type(hops) is not int or not 1 <= hops <= 8):
            return _bad("hops must be 1..8")
        if via is not None and (not isinstance(via, list) or not all(isinstance(v, str) for v in via)):
            return _bad("via must be a list of fingerprints")
        if exit_fp is not None and not isinstance(exit_fp, str):
            return _bad("exit must be a fingerprint")
        if country is not None and not (
            isinstance(country, str) and len(country) == 2 and country.isascii() and country.isalpha()
        ):
            return _bad("exit_country must be a two-letter country code")
        # The country travels as the circuit's isolation key, as a SOCKS username `exit={cc}` would
        # (runtime.client.path_policy): the path policy restricts the exit by its own GeoIP database.
        isolation = (f"exit={{{country.lower()}}}", "control") if country else ("control",)
        try:
            handle = await self.node.circuits.build(hops=hops, exit_fp=exit_fp, via=via, isolation=isolation)
        except (OSError, TimeoutError, OnionmeshError) as exc:
            return _bad(f"circuit build failed: {type(exc).__name__} {exc}", 502)
        return web.json_response(self._circuit(handle))

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
            [
                relay_json(d, guards, now, self.node.policy.country)
                for d in sorted(relays, key=lambda d: d.nickname)
            ]
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
        self._broadcast({"type": "circuit", "what": what, "circuit": self._circuit(handle)})

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

"""The status page: the client's circuits drawn as a picture, like Tor Browser's circuit display.

One self-contained HTML document (inline CSS and JS, no external resource of any kind) served by
the control server at GET /status-page, behind the same authentication as the JSON API (the
one-time login link sets the session cookie and redirects here). The page reads /status,
/circuits and /streams, and listens on the /events WebSocket: circuit and stream events refresh
the picture, traffic events feed a 60-second graph; /circuits is also polled every few seconds
in case the WebSocket is down.

Every value from the API reaches the DOM through `textContent` (never `innerHTML`), and the
response carries a strict Content-Security-Policy: only this response's nonce may run scripts or
styles, and the page may connect to nothing but its own origin.

Wiring: `server.extra_routes += status_page.routes(server)` before `server.start()`.
"""

from __future__ import annotations

import importlib.resources
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from onionmesh.runtime.client.control import ControlServer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PATH = "/status-page"
_HOST_RE = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")

# The page itself (HTML, inline CSS and JS, no external resources) is a package file; "__NONCE__"
# marks where each response's CSP nonce goes.
PAGE = (importlib.resources.files(__package__) / "status_page.html").read_text(encoding="utf-8")


def content_security_policy(nonce: str, ws_origin: str | None) -> str:
    connect = "'self'" + (f" {ws_origin}" if ws_origin else "")
    return "; ".join(
        [
            "default-src 'self'",
            f"script-src 'nonce-{nonce}'",
            f"style-src 'nonce-{nonce}'",
            "img-src 'self' data:",
            f"connect-src {connect}",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


def render(nonce: str) -> str:
    return PAGE.replace("__NONCE__", nonce)


def routes(server: ControlServer) -> list[tuple[str, str, Handler]]:
    """The status page's routes, for `server.extra_routes` (added before `server.start()`)."""

    async def status_page(request: web.Request) -> web.Response:
        nonce = secrets.token_urlsafe(18)
        host = request.host if _HOST_RE.match(request.host or "") else f"{server.host}:{server.port}"
        return web.Response(
            text=render(nonce),
            content_type="text/html",
            charset="utf-8",
            headers={
                "Content-Security-Policy": content_security_policy(nonce, f"ws://{host}"),
                "X-Content-Type-Options": "nosniff",
                "X-Frame-Options": "DENY",
                "Referrer-Policy": "no-referrer",
                "Cache-Control": "no-store",
            },
        )

    return [("GET", PATH, status_page)]

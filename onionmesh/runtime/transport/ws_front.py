"""A bridge's web front: an ordinary small web site that upgrades one secret path to a link.

Everyone sees a harmless page at `/` and a plain 404 elsewhere (an active prober sees a web
site).  Only a WebSocket upgrade request for the secret path (compared in constant time)
becomes a link; a plain GET of the secret path gets the same 404 as any other path.  The
secret path is 256 random bits kept in DATA_DIR/bridge-secret (0600), stable across restarts.

Not in this module: the WebSocket adapter (runtime.transport.websocket), what links carry (relay_node).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import ssl
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from onionmesh.runtime.keystore import check_secret, write_secret
from onionmesh.runtime.safelog import get_logger
from onionmesh.runtime.transport.websocket import MAX_MSG, WsReader, WsWriter, pump

log = get_logger("onionmesh.ws_front")

SECRET_FILE = "bridge-secret"
SERVER_HEADER = "nginx"  # what the page says it is; aiohttp's default names aiohttp and Python
DECOY_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Notes from the allotment</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><h1>Notes from the allotment</h1>
<p>Tomatoes did well this year; the beans less so. The new compost bins are finished.</p>
<p>Next work day: the first Saturday of the month, from ten o'clock.</p>
</body></html>
"""
NOT_FOUND_PAGE = """<html>
<head><title>404 Not Found</title></head>
<body>
<center><h1>404 Not Found</h1></center>
<hr><center>nginx</center>
</body>
</html>
"""

OnLink = Callable[[WsReader, WsWriter], None]


def load_or_create_secret(data_dir: Path, random_bytes: Callable[[int], bytes]) -> str:
    """The secret path segment: 43 URL-safe characters (256 bits), created once, file 0600."""
    path = Path(data_dir) / SECRET_FILE
    if path.exists():
        check_secret(path)  # the path is the bridge's password: refuse one others may read, as keys
    try:
        text = path.read_text(encoding="ascii").strip()
        if len(text) >= 22:
            return text
    except (OSError, UnicodeDecodeError):
        pass
    secret = base64.urlsafe_b64encode(random_bytes(32)).decode().rstrip("=")
    write_secret(path, secret.encode() + b"\n")
    return secret


class WsFront:
    def __init__(
        self,
        host: str,
        port: int,
        secret_path: str,
        on_link: OnLink,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self.port = host, port
        self._secret = ("/" + secret_path).encode()
        self._on_link = on_link
        self._ssl = ssl_context
        self._runner: web.AppRunner | None = None
        self.stats = {"decoy": 0, "links": 0}

    def _is_secret(self, request: web.Request) -> bool:
        return hmac.compare_digest(request.raw_path.split("?", 1)[0].encode(), self._secret)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        wants_ws = request.headers.get("Upgrade", "").lower() == "websocket"
        if wants_ws and request.method == "GET" and self._is_secret(request):
            return await self._link(request)
        self.stats["decoy"] += 1
        if request.path in ("/", "/index.html") and request.method in ("GET", "HEAD"):
            return web.Response(text=DECOY_PAGE, content_type="text/html")
        return web.Response(status=404, text=NOT_FOUND_PAGE, content_type="text/html")

    async def _link(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=MAX_MSG, autoping=True, compress=False)
        await ws.prepare(request)
        reader = WsReader()
        writer = WsWriter(ws, request.transport)
        self.stats["links"] += 1
        self._on_link(reader, writer)
        await pump(ws, reader, writer)  # the handler lives as long as the link
        return ws

    @staticmethod
    async def _server_header(_request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Server"] = SERVER_HEADER

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024)
        app.on_response_prepare.append(self._server_header)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self._ssl, reuse_address=True)
        await site.start()
        server = site._server
        if self.port == 0 and server is not None:
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        log.info("web front listening", port=self.port, tls=self._ssl is not None)

    async def stop(self) -> None:
        if self._runner is not None:
            async with asyncio.timeout(5):
                await self._runner.cleanup()


def server_ssl_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert), str(key))
    return ctx

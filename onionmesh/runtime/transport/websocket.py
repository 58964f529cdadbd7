"""The WebSocket link transport: the link protocol, unchanged, inside binary WebSocket messages.

`runtime.transport.link.Link` drives a reader/writer pair; here the pair is backed by an aiohttp
WebSocket instead of a TCP socket, so a bridge's links look like a web site's WebSocket to an
observer (docs/censorship.md).  Link bytes go in binary messages of at most `CHUNK` bytes; a
text message, a message over `MAX_MSG`, or anything but binary data closes the connection.

Not in this module: the HTTP side of a bridge (runtime.transport.ws_front), what a link means.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

import aiohttp

from onionmesh.directory.bridge_line import BridgeLine
from onionmesh.errors import OnionmeshError
from onionmesh.rng import Rng
from onionmesh.runtime.safelog import get_logger
from onionmesh.runtime.transport.link import HANDSHAKE_TIMEOUT, Link, LinkLimits, LinkOwner
from onionmesh.runtime.transport.link_setup import initiate_link

log = get_logger("onionmesh.ws")

CHUNK = 64 * 1024  # link bytes per WebSocket message
MAX_MSG = 256 * 1024  # larger messages from a peer close the connection
READ_HIGH_WATER = 1024 * 1024  # stop reading the WebSocket while this much is unread
# What a browser would send; aiohttp's default names itself (docs/censorship.md).
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


class WsReader:
    """The StreamReader side Link uses: `read(n)` returns up to n bytes, b"" at the end."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._eof = False
        self._data = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    def feed(self, data: bytes) -> None:
        self._buf += data
        self._data.set()
        if len(self._buf) >= READ_HIGH_WATER:
            self._room.clear()

    def feed_eof(self) -> None:
        self._eof = True
        self._data.set()
        self._room.set()

    async def wait_room(self) -> None:
        await self._room.wait()

    async def read(self, n: int) -> bytes:
        while not self._buf and not self._eof:
            self._data.clear()
            await self._data.wait()
        out = bytes(self._buf[:n])
        del self._buf[:n]
        if len(self._buf) < READ_HIGH_WATER:
            self._room.set()
        return out


class WsWriter:
    """The StreamWriter side Link uses: `write` queues, a task sends; also stands in as `.transport`."""

    def __init__(self, ws: Any, transport: asyncio.BaseTransport | None, on_close: Any = None) -> None:
        self._ws = ws
        self._raw = transport
        self._pending = bytearray()
        self._sending = False
        self._sent = asyncio.Event()
        self._sent.set()
        self._closing = False
        self._on_close = on_close
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def transport(self) -> WsWriter:
        return self

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def write(self, data: bytes) -> None:
        if self._closing:
            raise ConnectionError("WebSocket closed")
        if not data:
            return
        self._pending += data
        self._sent.clear()
        if not self._sending:
            self._sending = True
            self._spawn(self._send_loop())

    async def _send_loop(self) -> None:
        try:
            while self._pending and not self._closing:
                chunk = bytes(self._pending[:CHUNK])
                del self._pending[:CHUNK]
                await self._ws.send_bytes(chunk)
        except (ConnectionError, RuntimeError, aiohttp.ClientError, OSError):
            self.close()
        finally:
            self._sending = False
            if not self._pending or self._closing:
                self._sent.set()

    async def drain(self) -> None:
        await self._sent.wait()
        if self._closing:
            raise ConnectionError("WebSocket closed")

    def get_write_buffer_size(self) -> int:
        raw = self._raw.get_write_buffer_size() if isinstance(self._raw, asyncio.WriteTransport) else 0
        return len(self._pending) + raw

    def is_closing(self) -> bool:
        return self._closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._raw.get_extra_info(name, default) if self._raw is not None else default

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._pending.clear()
        self._sent.set()
        self._spawn(self._close())

    async def _close(self) -> None:
        with contextlib.suppress(TimeoutError, ConnectionError, RuntimeError, aiohttp.ClientError, OSError):
            async with asyncio.timeout(2):  # best effort: the peer may be gone
                await self._ws.close()
        if self._on_close is not None:
            try:
                await self._on_close()
            except (RuntimeError, aiohttp.ClientError, OSError) as exc:  # closing the session
                log.info("WebSocket session close failed", error=type(exc).__name__)


async def pump(ws: Any, reader: WsReader, writer: WsWriter) -> None:
    """Feed binary messages to `reader` until the WebSocket ends; anything else closes it."""
    try:
        while not writer.is_closing():
            await reader.wait_room()
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.BINARY:
                reader.feed(msg.data)
                continue
            if msg.type is aiohttp.WSMsgType.TEXT:
                with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError, OSError):
                    await ws.close(code=aiohttp.WSCloseCode.UNSUPPORTED_DATA)
            break  # CLOSE, CLOSING, CLOSED, ERROR (e.g. a message over MAX_MSG)
    except (ConnectionError, RuntimeError, aiohttp.ClientError, OSError, asyncio.CancelledError):
        pass
    finally:
        reader.feed_eof()
        writer.close()


def client_ssl_context() -> ssl.SSLContext:
    """TLS without certificate checks: the link handshake pins the bridge's identity key, and a
    bridge's certificate is often self-signed (docs/censorship.md, "Why TLS is not verified")."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def open_ws_link(
    bridge: BridgeLine,
    owner: LinkOwner,
    rng: Rng,
    timeout: float = HANDSHAKE_TIMEOUT,
    limits: LinkLimits | None = None,
) -> Link:
    """Connect to a bridge's secret URL and finish the link handshake, pinning its identity.

    Raises OSError on any failure, as `runtime.transport.link.open_link` does.
    """
    session = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})
    try:
        async with asyncio.timeout(timeout):
            ws = await session.ws_connect(
                bridge.url,
                ssl=client_ssl_context() if bridge.tls else False,
                max_msg_size=MAX_MSG,
                autoping=True,
                compress=0,
            )
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        await session.close()
        raise OSError(f"cannot reach the bridge: {type(exc).__name__}") from None
    conn = ws._response.connection  # the TCP transport underneath, for buffer sizes
    raw = conn.transport if conn is not None else None
    reader = WsReader()
    writer = WsWriter(ws, raw, on_close=session.close)
    pump_task = asyncio.get_running_loop().create_task(pump(ws, reader, writer), name="ws-pump")
    writer._tasks.add(pump_task)
    return await initiate_link(reader, writer, bridge.identity_pk, owner, rng, timeout, limits)  # type: ignore[arg-type]


__all__ = ["MAX_MSG", "OnionmeshError", "WsReader", "WsWriter", "open_ws_link", "pump"]
